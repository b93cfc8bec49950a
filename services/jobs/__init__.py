"""Jobs the services start or queue (verifier retraining), below the services and above the shared packages."""
