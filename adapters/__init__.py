"""Framework adapters (DSPy, LangChain, LangGraph); each imports its framework lazily."""
