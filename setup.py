import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

PTH = "nnfm-ext-trainer.pth"  # sets nnUNet_extTrainer at start-up (nnfm/_ext_trainer_hook.py)


class build_py_with_pth(build_py):
    def run(self):
        super().run()
        self.copy_file(PTH, os.path.join(self.build_lib, PTH))


setup(
    name="nnfm",
    version="0.1.0",
    description="Pretrained foundation-model encoders inside nnU-Net v2's self-configuring pipeline",
    long_description=open("README.md").read() if os.path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    # the repository keeps nnU-Net's folder names (planners/, trainers/); installed, they carry nnFM's
    # own names so that a user's package called `trainers` or `planners` cannot hide them
    packages=find_packages(include=["nnfm", "nnfm.*"]) + ["nnfm_planners", "nnfm_trainers"],
    package_dir={"nnfm_planners": "planners", "nnfm_trainers": "trainers"},
    # weights shipped with nnFM (nnfm/weights/registry.py, ``embedded=True``): used offline, sha256-checked
    package_data={"nnfm.weights": ["embedded/*.safetensors", "embedded/*.json"]},
    python_requires=">=3.10",
    install_requires=[
        # pip on this project's machines caps torch at 2.14.1; never ask for newer
        "torch>=2.1,<=2.14.1",
        "nnunetv2==2.8.1",
        "dynamic-network-architectures>=0.4.1,<0.5",
        "batchgenerators>=0.25.1",
        "acvl-utils>=0.2.3",
        "SimpleITK>=2.2.1",
        "timm>=1.0.20,<=1.0.22",
        # the hub's client: weights on the Hugging Face hub (nnfm/weights/download.py); timm depends on it too
        "huggingface_hub>=0.24",
        "safetensors>=0.4",
        "tqdm",
        "matplotlib",
    ],
    extras_require={"test": ["pytest>=7", "pytest-xdist>=3"]},
    entry_points={
        "console_scripts": [
            "nnFM_plan_and_preprocess = nnfm_planners.plan_and_preprocess:main",
            "nnFM_demo = nnfm.demo:main",
            "nnFM_doctor = nnfm.doctor:main",
            "nnFM_pretrain = nnfm.pretraining.cli:main",
            "nnFM_benchmark = nnfm.benchmark.cli:main",
            "nnFM_extract_features = nnfm.features.extract:main",
            "nnFM_validate = nnfm.training.validation:main",
        ]
    },
    cmdclass={"build_py": build_py_with_pth},
)
