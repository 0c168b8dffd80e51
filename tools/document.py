"""A small document model for the report: headings, paragraphs, lists, tables, code and figures, written
once and rendered twice, to Markdown (REPORT.md) and to PDF (report.pdf, with fpdf2).

Inline text may hold **bold** and `code` spans; both renderers honour them.
"""
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
from fpdf import FPDF
from fpdf.fonts import FontFace
from PIL import Image as PILImage

FONTS = Path(matplotlib.get_data_path()) / "fonts" / "ttf"  # DejaVu ships with matplotlib: Unicode, no download
INLINE = re.compile(r"(\*\*.+?\*\*|`.+?`)")


@dataclass
class Document:
    title: str
    blocks: list = field(default_factory=list)

    def heading(self, level, text):
        self.blocks.append(("heading", level, text))

    def paragraph(self, text):
        self.blocks.append(("paragraph", text))

    def bullets(self, items):
        self.blocks.append(("bullets", list(items)))

    def table(self, header, rows, align=None):
        """`align`: one of "l"/"r" per column (default: left, then right for the rest)."""
        align = align or "l" + "r" * (len(header) - 1)
        self.blocks.append(("table", list(header), [[str(cell) for cell in row] for row in rows], align))

    def code(self, text):
        self.blocks.append(("code", text.rstrip("\n")))

    def figure(self, path, caption):
        """A PNG; where the file is missing, a line saying so takes its place."""
        self.blocks.append(("figure", Path(path), caption))


def to_markdown(document, base):
    """The document as Markdown; figure paths relative to `base` (the folder the .md file is written to)."""
    out = [f"# {document.title}", ""]
    for kind, *content in document.blocks:
        if kind == "heading":
            out += ["#" * (content[0] + 1) + " " + content[1], ""]
        elif kind == "paragraph":
            out += [content[0], ""]
        elif kind == "bullets":
            out += [f"- {item}" for item in content[0]] + [""]
        elif kind == "table":
            header, rows, align = content
            out.append("| " + " | ".join(header) + " |")
            out.append("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
            out += ["| " + " | ".join(row) + " |" for row in rows] + [""]
        elif kind == "code":
            out += ["```", content[0], "```", ""]
        elif kind == "figure":
            path, caption = content
            out += [f"![{caption}]({os.path.relpath(path, base)})" if path.is_file()
                    else f"_{caption}: missing ({path.name})_", ""]
    return "\n".join(out)


class _PDF(FPDF):
    def footer(self):
        self.set_y(-12)
        self.set_font("sans", size=8)
        self.set_text_color(110)
        self.cell(0, 6, f"{self.title}  ·  page {self.page_no()} of {{nb}}", align="C")
        self.set_text_color(0)


def to_pdf(document):
    """The document as the bytes of an A4 PDF with page numbers, embedded figures and real tables."""
    pdf = _PDF(format="A4")
    pdf.set_title(document.title)
    pdf.set_margins(16, 15, 16)
    pdf.set_auto_page_break(True, margin=16)
    pdf.add_font("sans", "", FONTS / "DejaVuSans.ttf")
    pdf.add_font("sans", "B", FONTS / "DejaVuSans-Bold.ttf")
    pdf.add_font("sans", "I", FONTS / "DejaVuSans-Oblique.ttf")
    pdf.add_font("mono", "", FONTS / "DejaVuSansMono.ttf")
    pdf.add_page()
    pdf.set_font("sans", "B", 18)
    pdf.multi_cell(0, 9, document.title)
    pdf.ln(2)
    for kind, *content in document.blocks:
        {"heading": _heading, "paragraph": _paragraph, "bullets": _bullets, "table": _table, "code": _code,
         "figure": _figure}[kind](pdf, *content)
    return bytes(pdf.output())


def _rich(pdf, text, size, height):
    """Write inline text with its **bold** and `code` spans, wrapping at the margin."""
    for part in INLINE.split(text):
        if part.startswith("**") and part.endswith("**") and len(part) > 4:
            pdf.set_font("sans", "B", size)
            pdf.write(height, part[2:-2])
        elif part.startswith("`") and part.endswith("`") and len(part) > 2:
            pdf.set_font("mono", "", size - 0.5)
            pdf.write(height, part[1:-1])
        elif part:
            pdf.set_font("sans", "", size)
            pdf.write(height, part)
    pdf.set_font("sans", "", size)


def _plain(text):
    return INLINE.sub(lambda match: match.group(0).strip("*`"), text)


def _heading(pdf, level, text):
    size = {1: 14, 2: 11.5}.get(level, 10.5)
    if pdf.get_y() > pdf.h - 45:  # no heading alone at the foot of a page
        pdf.add_page()
    pdf.ln(4 if level == 1 else 2)
    if level <= 2:
        pdf.start_section(_plain(text), level=level - 1)
    pdf.set_font("sans", "B", size)
    pdf.multi_cell(0, size * 0.55, _plain(text))
    pdf.ln(1.5)


def _paragraph(pdf, text):
    _rich(pdf, text, 9.5, 5)
    pdf.ln(7)


def _bullets(pdf, items):
    for item in items:
        pdf.set_x(pdf.l_margin + 2)
        pdf.set_font("sans", "", 9.5)
        pdf.write(5, "•  ")
        _rich(pdf, item, 9.5, 5)
        pdf.ln(5.5)
    pdf.ln(2)


def _table(pdf, header, rows, align):
    size = 8.5 if len(header) <= 5 else 7.5
    pdf.set_font("sans", "", size)
    width = pdf.w - pdf.l_margin - pdf.r_margin
    pdf.set_font("sans", "B", size)
    wants = [pdf.get_string_width(_plain(cell)) + 4 for cell in header]  # headings are bold
    pdf.set_font("sans", "", size)
    for row in rows:
        wants = [max(want, pdf.get_string_width(_plain(cell)) + 4) for want, cell in zip(wants, row, strict=True)]
    widths = _fit(wants, width)
    with pdf.table(col_widths=widths, width=sum(widths), align="LEFT",
                   text_align=["RIGHT" if a == "r" else "LEFT" for a in align], line_height=size * 0.5,
                   headings_style=FontFace(emphasis="BOLD", fill_color=(232, 236, 242)),
                   borders_layout="HORIZONTAL_LINES", padding=0.8) as table:
        for row in [header, *rows]:
            cells = table.row()
            for cell in row:
                cells.cell(_plain(cell))
    pdf.ln(4)


def _fit(wants, width):
    """Column widths: each column as wide as its longest cell wants; when together they want more than the
    page, the narrow ones keep their width and the wide ones share what is left (their text wraps)."""
    if sum(wants) <= width:
        return wants
    widths, wide = list(wants), set(range(len(wants)))
    while True:
        share = (width - sum(widths[i] for i in range(len(wants)) if i not in wide)) / len(wide)
        narrow = {i for i in wide if wants[i] <= share}
        if not narrow:
            return [share if i in wide else widths[i] for i in range(len(wants))]
        wide -= narrow


def _code(pdf, text):
    width = pdf.w - pdf.l_margin - pdf.r_margin - 4
    longest = max((len(line) for line in text.splitlines()), default=1)
    size = max(5.5, min(8.0, width / (0.6 * 0.3528 * max(longest, 1))))  # DejaVu Mono: 0.6 em per character
    pdf.set_font("mono", "", size)
    pdf.set_fill_color(245, 245, 245)
    height = size * 0.45 * (len(text.splitlines()) + 1)
    if height < 80 and pdf.get_y() + height > pdf.h - pdf.b_margin:  # a short block stays on one page
        pdf.add_page()
    pdf.multi_cell(0, size * 0.45, text, fill=True, padding=2)
    pdf.ln(3)


def _figure(pdf, path, caption):
    if not path.is_file():
        pdf.set_font("sans", "I", 9)
        pdf.multi_cell(0, 5, f"{caption}: missing ({path.name})")
        pdf.ln(2)
        return
    with PILImage.open(path) as image:
        pixels_wide, pixels_high = image.size
    width = min(pdf.w - pdf.l_margin - pdf.r_margin, pixels_wide * 25.4 / 110)  # as large as drawn, at most
    height = width * pixels_high / pixels_wide
    room = pdf.h - pdf.b_margin - 10
    if height > room - pdf.t_margin:  # taller than a page: shrink to fit
        width, height = width * (room - pdf.t_margin) / height, room - pdf.t_margin
    if pdf.get_y() + height > room:
        pdf.add_page()
    pdf.image(str(path), x=pdf.l_margin + (pdf.w - pdf.l_margin - pdf.r_margin - width) / 2, w=width, h=height)
    pdf.set_font("sans", "I", 8)
    pdf.multi_cell(0, 4.5, caption, align="C")
    pdf.ln(3)
