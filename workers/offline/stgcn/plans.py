"""ST-GCN network sizes by name: per block (channels, temporal stride); ``full`` is the
original ten-block network. Plain data, so command-line parsers need no torch."""

PLANS = {
    "full": None,
    "small": [(32, 1), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1)],
    "tiny": [(16, 1), (32, 1), (32, 2), (64, 1), (64, 2), (64, 1)],
    # 77 k parameters, ~3x faster than "tiny" (the fall model: measured under load, 33-56 vs
    # 120-150 ms per 48-frame sample and step)
    "mini": [(16, 1), (32, 2), (32, 1), (64, 2)],
}
