"""Make `dvc plots show` and `dvc plots diff` pages render offline: `make offline-plots`.

DVC's default page loads Vega, Vega-Lite and vega-embed from a CDN, so offline its charts are blank.
This fetches the three libraries' pinned npm packages (`npm pack`; npm's cache serves a rerun offline),
checks each tarball against its pinned SHA-512 (the `integrity` of npm's lockfiles), and writes
.dvc/plots/offline.html: an HTML template for DVC with the three minified builds inlined, so every page
DVC writes from it is self-contained (it also works copied to another machine). Then it sets
`plots.html_template` in .dvc/config.local: per checkout, like the git-ignored template itself, since
a committed setting would break `dvc plots` in every clone that has not run this.

Usage: python -m tools.offline_plots [--repo DIR]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from pipeline.io import atomic_file
from pipeline.runtime import UserError, run_stage

# name: (version, npm integrity of the tarball, the build inside it). The majors DVC itself loads
# (vega 5, vega-lite 5, vega-embed 6), whose schemas DVC's plot templates declare.
PACKAGES = {
    "vega": ("5.33.1", "sha512-1fArfVDUqVbb5z8n+/nVQb+VNBzx8svY6CrsyTK4Ujm4yrd9I1auoKxBAPXLCavY1LcrbHUskQbGUP8gXOzyQw==",
             "package/build/vega.min.js"),
    "vega-lite": ("5.23.0", "sha512-l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt3t2gN2gs/y4DYTs/RPoTeYAuEg6mA==",
                  "package/build/vega-lite.min.js"),
    "vega-embed": ("6.29.0", "sha512-PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etzA/GzdrkceXFma+FDHNXUppKuM0U6Q==",
                   "package/build/vega-embed.min.js"),
}
TEMPLATE = Path("plots") / "offline.html"  # inside .dvc/, where DVC resolves a relative plots.html_template
# DVC fills these in the template by plain string replacement; `{scripts}` (the CDN tags) is left out.
PLACEHOLDERS = ("{plot_divs}", "{refresh_tag}", "{scripts}")

PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{refresh_tag}
<title>DVC Plot</title>
<!-- Written by tools/offline_plots.py (make offline-plots); libraries inlined from npm:
{manifest}
-->
{libraries}
<script>
// DVC writes an empty chart (spec {}) for each folder of images under plots:; drop those blank boxes.
const embedChart = vegaEmbed;
vegaEmbed = (id, spec, options) => Object.keys(spec).length ? embedChart(id, spec, options) : document.querySelector(id).remove();
</script>
<style>table { border-spacing: 15px; }</style>
</head>
<body>
{plot_divs}
</body>
</html>
"""


def npm_pack(specs: list[str], into: Path) -> list[Path]:
    """Download the npm tarballs of `specs` (name@version) into `into`; return their paths."""
    npm = shutil.which("npm")
    if npm is None:
        raise UserError("npm not found: install Node.js and npm (Debian: apt-get install npm), then rerun")
    done = subprocess.run([npm, "pack", *specs, "--json", "--pack-destination", str(into)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"npm pack {' '.join(specs)} failed: {last}")
    return [into / entry["filename"] for entry in json.loads(done.stdout)]


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def verified_build(name: str, tarball: Path) -> str:
    """The minified build inside `name`'s tarball, after checking the tarball against its pin."""
    version, expected, member = PACKAGES[name]
    data = tarball.read_bytes()
    if integrity(data) != expected:
        raise UserError(f"{name}@{version}: tarball checksum {integrity(data)} does not match the pinned {expected}")
    with tarfile.open(tarball) as archive:
        try:
            source = archive.extractfile(member)
        except KeyError:
            source = None
        if source is None:
            raise UserError(f"{name}@{version}: its tarball has no file {member}")
        code = source.read().decode("utf-8")
    clashes = [text for text in ("</script", "<!--", *PLACEHOLDERS) if text in code]
    if clashes:  # inlined, such text would end the script early or be replaced by DVC
        raise UserError(f"{name}@{version}: {member} contains {', '.join(clashes)}; it cannot be inlined")
    return code


def write_template(dvc_dir: Path) -> Path:
    """Fetch, verify and inline the libraries into dvc_dir/plots/offline.html; return its path."""
    with tempfile.TemporaryDirectory() as tmp:
        specs = [f"{name}@{version}" for name, (version, _, _) in PACKAGES.items()]
        builds = {name: verified_build(name, tarball) for name, tarball in zip(PACKAGES, npm_pack(specs, Path(tmp)))}
    manifest = "\n".join(f"  {name}@{PACKAGES[name][0]} {PACKAGES[name][2].removeprefix('package/')} "
                         f"sha256:{hashlib.sha256(code.encode()).hexdigest()}" for name, code in builds.items())
    libraries = "\n".join(f"<script>\n{code}\n</script>" for code in builds.values())
    page = PAGE.replace("{manifest}", manifest).replace("{libraries}", libraries)  # the libraries last
    path = dvc_dir / TEMPLATE
    with atomic_file(path) as out:
        out.write_text(page, encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=Path("."), help="the DVC project (default: .)")
    args = parser.parse_args()
    dvc_dir = args.repo / ".dvc"
    if not dvc_dir.is_dir():
        raise UserError(f"--repo {args.repo}: not a DVC project (no .dvc folder)")
    path = write_template(dvc_dir)
    done = subprocess.run([sys.executable, "-m", "dvc", "config", "--local", "plots.html_template", str(TEMPLATE)],
                          cwd=args.repo, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"dvc config --local plots.html_template failed: {done.stderr.strip()}")
    print(f"{path}: dvc plots show / diff now render offline (plots.html_template in .dvc/config.local)")


if __name__ == "__main__":
    run_stage(main)
