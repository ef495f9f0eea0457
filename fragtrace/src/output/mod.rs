//! Renderers: text lines, JSON lines, status line, summary.
