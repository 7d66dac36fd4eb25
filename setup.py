"""Where the packages live. Metadata and dependencies are in pyproject.toml; this file only
maps the folders the product's design fixes onto one namespace: `service/` installs as
`seam.service` and `training/` as `seam.training`, so nothing with a generic name lands in
site-packages beside the user's own `service` or `training`. A folder that is absent (the API
image copies no `training/`) is simply not installed."""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
FLOORS = {"seam.service": "service", "seam.training": "training"}

package_dir = {"seam": "seam"}
packages = find_packages(include=["seam", "seam.*"])
for name, folder in FLOORS.items():
    if (ROOT / folder / "__init__.py").is_file():
        package_dir[name] = folder
        packages += [name, *(f"{name}.{sub}" for sub in find_packages(folder))]

setup(packages=packages, package_dir=package_dir)
