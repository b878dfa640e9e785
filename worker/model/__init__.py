"""The model: the classifier that serves, its versions and publishing, the gate, the review flag."""
