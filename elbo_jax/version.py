"""The package version: results.json and ablation tables carry it beside the git commit, so a
published number names the code that made it. CHANGELOG.md lists the changes that move numbers."""

__version__ = "0.2.0"
