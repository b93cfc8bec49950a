"""OpenRLHF tandem rollouts: pass this file's path to ``--train.agent_func_path``.

OpenRLHF loads the file by path and instantiates ``AgentExecutor()`` in each vLLM rollout actor; configure it with
``LEGIBILITY_*`` environment variables in the actors' runtime env (see docs/integrations/openrlhf.md).
"""

from openrlhf.utils.agent import AgentExecutorBase

from services.learner.integrations.tandem_agent import TandemAgent


class AgentExecutor(TandemAgent, AgentExecutorBase):
    """Tandem rollouts (policy segments from OpenRLHF's llm_engine, weak ones from the weak-model service)."""
