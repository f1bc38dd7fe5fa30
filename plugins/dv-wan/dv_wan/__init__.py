"""dv-wan: Wan 2.1 text-to-video as a dv backbone."""
