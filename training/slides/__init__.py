"""Whole-slide inference: a slide read at PCam's resolution, cut into patches whose centers tile it,
scored in-process or through a gateway, and written as a calibrated heatmap with regions and a summary.

PCam labels a patch by the center 32x32; read at a stride of 32 px, the patches' centers tile the
slide, so every cell of the heatmap is one patch's answer under PCam's own rule
(docs/architecture.md#whole-slide-inference). Research use only, not for diagnosis.
"""
