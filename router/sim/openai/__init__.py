"""OpenAI wire formats: chat, embeddings, the Responses API, and Azure OpenAI on top."""
