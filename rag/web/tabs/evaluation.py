"""评测: the QA evaluation of a library on an uploaded gold file (or the sample corpus's), with plots."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from ...evaluation.evaluate import load_gold, plot_qa, qa_markdown, write_report
from ..common import Page, error


class EvaluationTab:
    """The 评测 tab."""

    def __init__(self, page: Page) -> None:
        self.page = page

    def evaluate(self, gold_file: Any, limit: float | None, library: str,
                 request: gr.Request) -> tuple[str, list[str]]:
        """Run the QA evaluation on an uploaded gold file (or the bundled one): (report Markdown, plot paths)."""
        given = getattr(gold_file, "name", gold_file)
        if not given and self.page.gold is None:
            return error("请上传金标准文件（JSONL）"), []
        uploaded = self.page.gate()
        try:
            path, name = self.page.gold, getattr(self.page.gold, "name", "")
            if given:
                accepted, refused = uploaded.accept([given], self.page.max_bytes)
                if refused:
                    return error(f"{refused[0].name}：{refused[0].reason}"), []
                path, name = accepted[0].path, accepted[0].name
            items = load_gold(path, int(limit) if limit else None)
            report = self.page.service.evaluate_qa(self.page.who(request), items, library)
        except Exception as exc:
            return self.page.explain(exc, "评测"), []
        finally:
            if given:
                uploaded.discard([given])
        markdown, written = write_report(report, Path(tempfile.mkdtemp(prefix="rag-eval-")), qa_markdown, plot_qa,
                                         dataset=name, index=library)
        return markdown, [str(p) for p in written if p.suffix == ".png"]

    def build(self, library: gr.Dropdown) -> None:
        """Lay the tab out (inside ``gr.Tab``)."""
        gr.Markdown("上传金标准问题集（JSONL：`id`, `question`, `answers`, `doc_ids`），或直接使用内置的样例问题集。")
        with gr.Row():
            gold = gr.File(label="金标准文件（可选）", file_types=[".jsonl"])
            limit = gr.Number(label="只评前 N 题（可选）", precision=0)
            eval_button = gr.Button("开始评测", variant="primary")
        eval_md = gr.Markdown()
        plots = gr.Gallery(label="图表", columns=2, height=360)
        eval_button.click(self.evaluate, [gold, limit, library], [eval_md, plots], api_name="evaluate")
