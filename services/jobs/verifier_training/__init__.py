"""The verifier retraining job (``legibility train-verifier``): round-mixed data, BT or CE loss, publish."""
