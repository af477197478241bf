"""Weak-to-strong on images (REFERENCE.md §9): frozen features, linear probes on weak soft labels and on
ground truth, on the harness's manifest, stage cache, tracker and results (docs/vision.md)."""
