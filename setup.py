from setuptools import find_packages, setup

setup(
    name="nnfm",
    version="0.1.0",
    packages=find_packages(include=["nnfm", "nnfm.*", "planners", "planners.*", "trainers", "trainers.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1,<=2.14.1",
        "nnunetv2==2.8.1",
        "dynamic-network-architectures>=0.4.1,<0.5",
        "batchgenerators>=0.25.1",
        "acvl-utils>=0.2.3",
        "SimpleITK>=2.2.1",
        "timm>=1.0.20,<=1.0.22",
        "safetensors>=0.4",
    ],
    extras_require={"test": ["pytest>=7"]},
)
