"""OpenAI-compatible endpoints (POST /v1/chat/completions, GET /v1/models): point an OpenAI
SDK or LangChain's ChatOpenAI at Parley and get its routing, quotas, limits, cache and
history. See docs/api.md."""
