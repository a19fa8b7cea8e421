"""Films in, dataset out: image reading, hashing, copies, the split, presets, phantoms, label issues."""
