"""Models built on the package's ttnn-style ops: ``minilm`` (all-MiniLM-L6-v2, docs/minilm.md), and
``minilm_reference``, its pure-numpy reference."""
