"""Benchmark scripts: `python -m benchmarks.bench_<name> --help`.

Each script writes `benchmarks/out/<name>.json` and renders it as Markdown with its
`render_markdown(results)`; the documentation's Benchmarks pages are generated from
those files (`docs/gen_benchmarks.py`). `common` holds what the scripts share.
"""
