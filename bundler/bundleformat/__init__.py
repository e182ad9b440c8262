"""What a bundle is: its tar layout, zstd frames, checksum files, signature and SBOM."""
