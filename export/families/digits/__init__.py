"""The CNN digit classifier (kind "cnn_classifier"), also the judge of the digit generators."""
