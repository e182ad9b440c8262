"""Media types of the OCI image spec and Docker's image manifest v2, in one place."""

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

INDEXES = (OCI_INDEX, DOCKER_LIST)
IMAGE_MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
# What we send as Accept for manifests: every kind we can read, and nothing older.
MANIFESTS = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)


def uncompressed_layer(manifest_media_type: str) -> str:
    """The uncompressed layer media type of the same family as the manifest."""
    return DOCKER_LAYER if manifest_media_type == DOCKER_MANIFEST else OCI_LAYER


def is_compressed_layer(media_type: str) -> bool:
    """Whether a layer of this type is already gzip or zstd (recompressing gains nothing)."""
    return media_type.endswith(("gzip", "zstd"))
