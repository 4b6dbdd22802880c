"""A tuned, seed-averaged comparison of self-KD methods against vanilla: running it
(`runner`), the space each method searches (`method_spaces`), what it records to resume
(`record`), its statistics (`stats`) and its table, Markdown, CSV and plot (`table`)."""
