"""Protobuf-free core of kgverify: splitting, Knowledge Index, InfoGain."""
