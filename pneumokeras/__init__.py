"""pneumokeras: pneumonia classifiers on chest X-rays (RSNA) in Keras 3.

Research and education only; not a medical device and not for diagnosis.
"""

__version__ = "0.1.0"
