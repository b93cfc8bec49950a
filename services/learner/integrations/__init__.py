"""Adapters that plug the services into external RL stacks without forking them.

- OpenRLHF: ``openrlhf_agent.py`` (``--train.agent_func_path``: tandem rollouts, weak spans outside
  ``action_ranges``) and ``openrlhf_reward.py`` (``--reward.remote_url``: the verifier over gRPC).
- TRL: ``trl.VerifierReward`` (``reward_funcs``) and ``trl.TandemRolloutFunc`` (``rollout_func`` with ``env_mask``).
- verl: ``verl.compute_score`` (``reward.custom_reward_function``).

All of them share :mod:`rewards` (one reward definition) and the learner's tandem loop; settings come from
``LEGIBILITY_*`` environment variables (:class:`settings.IntegrationSettings`). Guides: ``docs/integrations/``.
"""
