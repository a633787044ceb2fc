"""Lightning callbacks: GaussianityCallback (T* before fit) and SampleQualityCallback (metrics while training)."""
