"""BPF C sources, shipped inside the package as ``cgwatch.bpf`` (see pyproject.toml)."""
