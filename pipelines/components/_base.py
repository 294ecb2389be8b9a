"""The image every component runs in: the project's image (Dockerfile: llmd-kserve with the kube and pipelines
extras), or ``$LLMD_KSERVE_IMAGE`` when set at import/compile time."""

import os

from llmd_kserve.kube.spec import Images

DEFAULT_IMAGE = Images().llmd
BASE_IMAGE = os.environ.get("LLMD_KSERVE_IMAGE") or DEFAULT_IMAGE
COMPONENT_ARGS = {"base_image": BASE_IMAGE, "install_kfp_package": False}
"""``install_kfp_package=False``: the image already has kfp (and kfp.local runs components with this interpreter)."""
