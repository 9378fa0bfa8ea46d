"""Small geodesy helpers shared by stages (datum offsets such as GCJ-02, UTM zones)."""
