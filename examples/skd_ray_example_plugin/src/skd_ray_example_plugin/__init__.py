"""An example skd-ray plugin: the method `dsn`, the backbone `vgg_tiny`, the dataset `toy_shapes`."""
