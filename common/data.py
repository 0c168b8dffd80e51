"""Batching of a data set held in memory as one tensor (both questions' data code uses it)."""


def batch_bounds(total, batch_size):
    """(start, end) of each batch over `total` items; a last batch of one joins the batch before it.

    BatchNorm cannot train on a single item, and a batch of one is what 55,000 images in batches of 97
    leave at the end; merging it loses nothing (the field's other fix, drop_last, skips that image).
    """
    bounds = [(start, min(start + batch_size, total)) for start in range(0, total, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], total)]
    return bounds
