"""The page's tabs, one module each: 问答 (:mod:`.ask`), 对话 (:mod:`.chat`), 摘要 (:mod:`.summaries`), 文档库
(:mod:`.library`), 反馈 (:mod:`.feedback`), 评测 (:mod:`.evaluation`) and 管理 (:mod:`.admin`). Each is a class whose
methods are the tab's handlers (every one also a Gradio endpoint where it has an ``api_name``, taking the library
as its last input) and whose ``build`` lays the tab out; :func:`rag.web.page.build_app` puts them together."""
