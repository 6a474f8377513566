"""The office service: the one object every front end calls (rights per library, libraries, audit log), the
OpenAI-compatible HTTP API, and the checks on files from the web."""
