"""Generic helpers shared by the model package, the analysis tools and the experiment runner.

`fields`: typed `field=value` overrides and type checks for the configuration dataclasses.
`cli`: one-line command-line errors with exit code 2.
Nothing here knows about SepViT; the packages above it import it, never the other way round.
"""
