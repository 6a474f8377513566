"""What the page shows, as Markdown and HTML: answers with their citation markers and sources (the supporting
span highlighted), a conversation's turns, a model's draft while it writes, summaries with where each part came
from. Everything taken from documents or users is HTML-escaped."""

from __future__ import annotations

import html

from ..answering.answer import Answer
from ..answering.conversation import Turn
from ..normalize import normalize
from ..summaries.summarize import Summary


def render_answer(answer: Answer) -> str:
    """The answer as Markdown: text with citation markers, evidence, generator."""
    if answer.abstained:
        body = f"### {html.escape(answer.answer)}\n\n资料中没有足以支持回答的内容；下面是最接近的段落。"
    else:
        markers = "".join(f"[{m}]" for m in answer.citations)
        body = f"### {html.escape(answer.answer)} {markers}"
        if answer.evidence:
            body += f"\n\n**依据**：{html.escape(answer.evidence)}"
        if caution := answer.caution():
            body += f"\n\n> {html.escape(caution)}"
    if answer.fallback_reason:
        body += (f"\n\n> 模型的回答未被采用（{html.escape(answer.fallback_reason)}），"
                 "以上是从资料中抽取的答案。")
    if answer.note:
        body += f"\n\n> 注意：{html.escape(answer.note)}"
    if answer.dropped:
        body += "\n\n> 已删除无依据的内容：" + html.escape(" / ".join(answer.dropped))
    return body + f"\n\n<small>生成方式：{html.escape(answer.generator)}</small>"


def render_turn(turn: Turn, answer: Answer | None = None) -> str:
    """A conversation turn as the chat shows it: how a follow-up was understood, the answer with its citation
    markers, and which passages they name (the full passages are shown beside the chat)."""
    head = ""
    if normalize(turn.standalone) != normalize(turn.question):
        head = f"<small>理解为：{html.escape(turn.standalone)}</small>\n\n"
    if answer is not None:
        return head + render_answer(answer)
    markers = "".join(f"[{m}]" for m in turn.citations)
    cited = [s for s in turn.sources if s.get("marker") in turn.citations]
    listed = "；".join(f"[{s['marker']}] {html.escape(str(s.get('title') or s['doc_id']))}"
                      + (f"（{html.escape(s['location'])}）" if s.get("location") else "") for s in cited)
    return (head + f"{html.escape(turn.answer)} {markers}" + (f"\n\n<small>出处：{listed}</small>" if listed else "")
            + f"\n\n<small>生成方式：{html.escape(turn.generator)}</small>")


def render_draft(text: str) -> str:
    """A model's answer while it is being written: shown as unchecked until the checked answer replaces it."""
    return f"### {html.escape(text)} ▌\n\n<small>模型正在作答，核对资料后显示最终答案……</small>"


def render_summary(summary: Summary) -> str:
    """A summary as Markdown with where each part came from."""
    head = f"### {html.escape(summary.title or summary.doc_id or '')}\n\n"
    if summary.bullets:
        body = "\n".join(f"- {html.escape(b['text'])} <small>（{', '.join(s['doc_id'] for s in b['sources'])}）</small>"
                         for b in summary.bullets)
    else:
        body = html.escape(summary.summary)
        body += "\n\n<small>出处：" + "；".join(f"{s.doc_id} 字符 {s.start}–{s.end}" for s in summary.sources) + "</small>"
    if summary.dropped:
        body += "\n\n> 已删除无依据的句子：" + html.escape(" / ".join(summary.dropped))
    return head + body + f"\n\n<small>生成方式：{html.escape(summary.generator)}</small>"


def render_sources(answer: Answer) -> str:
    """Source passages as HTML, original script, the supporting span highlighted."""
    parts = []
    for source in answer.sources:
        text = source.text
        if source.support:
            a, b = source.support
            shown = (html.escape(text[:a]) + f"<mark>{html.escape(text[a:b])}</mark>" + html.escape(text[b:]))
        else:
            shown = html.escape(text)
        cited = " cited" if source.marker in answer.citations else ""
        # Where users look: the library (a question across several), then page, slide, sheet and row.
        where = "".join(f" · <b>{html.escape(x)}</b>" for x in (source.library, source.location) if x)
        warning = f'<div class="warn">⚠ {html.escape(source.warning)}</div>' if source.warning else ""
        parts.append(
            f'<div class="source{cited}"><div class="head">[{source.marker}] <b>{html.escape(source.title or source.doc_id)}'
            f"</b> · {html.escape(source.doc_id)}{where} · 相关度 {source.score:.4f} · "
            f"字符 {source.start}–{source.end}</div>"
            f'<div class="body">{shown.replace(chr(10), "<br>")}</div>{warning}</div>')
    return "\n".join(parts) or "<p>（没有检索到段落）</p>"
