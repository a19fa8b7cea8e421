"""evaluate's two halves, symmetric: `classification.evaluate_classifier` and `detection.evaluate_detector`.

Each scores its model's films through the inference core (`fracturekit.infer`, as predict does) and returns
a `common.ModelResult`: its metrics.json section, its predictions.csv rows, its report plots and its scores
for the cases to review. `fracturekit.evaluate` runs them and writes the files.
"""
