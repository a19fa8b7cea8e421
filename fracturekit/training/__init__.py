"""`fracturekit train`'s parts (the entry point is fracturekit/train.py): config, trainers, augment."""
