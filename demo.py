"""The office's web page and API, started from a checkout: the same as ``rag serve`` and ``python -m rag.web``
(:mod:`rag.web.server`), kept so that ``python demo.py [--host H] [--port N] [--index DIR] [--config FILE]`` works
as it always has.

    python demo.py                     # index/ (built from data/sample when empty), http://127.0.0.1:7860
    python demo.py --port 8000 --index /data/index --host 0.0.0.0    # needs users: rag user add NAME
"""

from rag.web.server import main

if __name__ == "__main__":
    main()
