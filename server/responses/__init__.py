"""OpenAI's Responses API (`/v1/responses`) as agent steps: translation to and from chat
completions, the event stream, and the store that `previous_response_id` reads."""
