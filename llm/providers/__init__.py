"""One module per provider kind; each builds a LangChain chat model from a ProviderConfig."""
