"""TFRecords: the example schema, the converter and the tf.data input pipeline."""
