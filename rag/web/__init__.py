"""The web page and the HTTP API of an office, served from one process: :mod:`rag.web.server` starts it
(``rag serve``, ``python -m rag.web``), :mod:`rag.web.page` puts the page together from its tabs
(:mod:`rag.web.tabs`), :mod:`rag.web.render` shows answers and summaries, :mod:`rag.web.common` holds what every
tab shares. The API itself is :mod:`rag.app.api`; the service behind both, :class:`rag.app.service.RagService`."""
