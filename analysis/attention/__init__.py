"""Attention maps in image space: place recorded maps on the input image, plot them, summarise them.

Modules: `maps` (records, geometry, one query, one block; images), `stats` (statistics, collapse, chance,
conclusions), `plots` (figures). This package exposes all of their public names, as notebook 02 reads them
(`from analysis import attention as A`).

Input: the records of `sepvit.attention.record_attention` (dicts with `block`, `kind`, `attn` and the
geometry `map_size`, `window`, `grid`, `padding`, `shift`, `stride`, `window_token`, or `kv_size` and
`sr_ratio` for Twins' global sub-sampled attention).

Coordinates. A feature-map pixel (i, j) of a stage with `stride` s stands for the image pixels
[s*i, s*(i+1)) x [s*j, s*(j+1)); a query given in image pixels (y, x) is the feature pixel
(y // s, x // s). (The overlapping patch embedding centres pixel i at s*i rather than at the block's
middle: at most (s-1)/2 image pixels apart, and distances are unaffected because both ends shift alike.)
Windows are row-major over the bottom/right-padded map. Swin's shifted windows hold the map rolled by
-shift, so a window position (r, c) in rolled coordinates is the original pixel ((r + shift) mod Hp,
(c + shift) mod Wp); every map here is returned in original (un-shifted) coordinates with padding cropped.

A whole block for one query: `block_query_attention` gives the probabilities over the block's keys (NaN
elsewhere); a SepViT block is its DWA and PWA chained (`dssa_query_attention`). Statistics per block: mean
attention distance (input pixels) and entropy, also normalised by log(keys); `trained_vs_untrained` compares
them. Collapse: `pwa_collapse` / `collapse_table` say whether PWA/GSA maps put nearly all their weight on
one key window or group (share of such queries, normalised entropy, a computed sentence; `collapse_sentences`
over seeds or inputs). `attention_vs_reach` sets the mean attention distance beside `analysis.reach`'s spatial
reach of the same block (`reconcile_markdown`). Accuracy:
`chance_table` says which models are at chance, and the `*_markdown` functions state conclusions computed
from the numbers, leaving models at chance uninterpreted.

Plots draw every map on one fixed colour scale (probabilities, log, `PROBABILITY_RANGE`) with its colour bar,
the query marked and window / group borders drawn.

Everything except the `draw_*` / `plot_*` functions is pure (records in, arrays / DataFrames out) and tested in
tests/test_attention.py. Plot functions return the matplotlib Figure.
"""
from analysis.attention.maps import (Record, WINDOW_KINDS, attention_array, block_label, block_names,
                                     block_query_attention, block_stage, dssa_query_attention, feature_pixel,
                                     load_image, pwa_matrix, pwa_received_attention, pwa_window_attention,
                                     query_attention, query_keys, query_location, received_share, select, short_block,
                                     stitch_windows, to_display_image, to_model_input, token_offset, upsample_to_image,
                                     window_grid_lines, window_labels, window_origins, window_pixel_positions,
                                     window_token_attention, window_token_self_attention)
from analysis.attention.stats import (COLLAPSE_MAJORITY, COLLAPSE_THRESHOLD, attention_entropy, attention_statistics,
                                      attention_vs_reach, block_reach, block_summary, chance_markdown, chance_table,
                                      collapse_sentences, collapse_table, mean_attention_distance, model_label,
                                      nearer_stages, pwa_collapse, reach_markdown, reconcile_markdown,
                                      record_statistics, trained_vs_untrained, training_effect_markdown)
from analysis.attention.plots import (COLOURBAR_LABEL, NOT_A_KEY, PROBABILITY_RANGE, add_colorbar, draw_attention,
                                      draw_borders, draw_image, plot_accuracy, plot_block_maps, plot_block_statistics,
                                      plot_dssa_anatomy, plot_head_maps, probability_norm)
