"""The Dockerfile linter: which rule fires on which line, and what the user reads."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from deployer import config
from deployer.errors import ConfigError
from deployer.lint import Finding, lint_file, lint_text

CASES: list[tuple[str, str, list[tuple[int, str]]]] = [
    (
        "good python",
        """\
        FROM python:3.12-slim
        WORKDIR /app
        COPY requirements.txt .
        RUN pip install -r requirements.txt
        COPY . .
        RUN pip install --no-deps .
        CMD ["python", "-m", "app"]
        """,
        [],
    ),
    (
        "whole source before pip",
        """\
        FROM python:3.12-slim
        WORKDIR /app
        COPY . .
        RUN pip install -r requirements.txt
        """,
        [(3, "copy-before-install")],
    ),
    (
        "lower-case instructions, a tab, ADD . and npm ci",
        """\
        from node:20
        add . /app
        run\tnpm ci
        """,
        [(2, "add-local"), (2, "copy-before-install")],
    ),
    (
        "exec-form install, copy flags",
        """\
        FROM node:20
        COPY --chown=node:node ./ /app/
        RUN ["npm", "ci"]
        """,
        [(2, "copy-before-install")],
    ),
    (
        "only the first install after the copy is reported",
        """\
        FROM golang:1.22
        COPY . .
        RUN go mod download
        RUN go build ./...
        RUN apt-get update && apt-get install -y make
        """,
        [(2, "copy-before-install")],
    ),
    (
        "system packages after the source",
        """\
        FROM debian:12
        COPY . /src
        RUN apt-get update \\
         && apt-get install -y --no-install-recommends make \\
         && rm -rf /var/lib/apt/lists/*
        """,
        [(2, "copy-before-install")],
    ),
    (
        "COPY --from another stage is not the source",
        """\
        FROM node:20 AS build
        COPY package.json package-lock.json ./
        RUN npm ci
        COPY . .
        RUN npm run build
        FROM nginx:1.27
        COPY --from=build /app/dist .
        COPY --from=build . /srv
        RUN apk add --no-cache curl
        """,
        [],
    ),
    (
        "rules apply per stage",
        """\
        FROM rust:1.79 AS build
        COPY . .
        FROM build AS test
        RUN cargo build --release
        FROM debian:12 AS final
        COPY . /app
        RUN bundle install
        """,
        [(6, "copy-before-install")],
    ),
    (
        "builds and scripts are not installs",
        """\
        FROM node:20
        COPY . .
        RUN npm run build && yarn build && npx prisma generate
        """,
        [],
    ),
    (
        "apt-get update alone, continuation and comment inside",
        """\
        FROM ubuntu:24.04
        RUN apt-get update
        RUN apt-get install -y curl
        RUN apt-get -q update \\
            # refresh first
            && apt-get -y install git
        """,
        [(2, "apt-update-alone")],
    ),
    (
        "base image tags",
        """\
        FROM python
        FROM python:latest AS two
        FROM localhost:5000/acme/base
        FROM registry.example.com:5000/acme/base:1.4
        FROM --platform=linux/amd64 alpine:3.20
        FROM alpine@sha256:0a4eaa0eecf5f8c050e5bba433f58c052be7587ee8af3e8b3910ef9ab5fbe9f5
        FROM scratch
        FROM two
        ARG BASE=python:3.12
        FROM ${BASE}
        """,
        [(1, "from-latest"), (2, "from-latest"), (3, "from-latest")],
    ),
    (
        "ADD: URLs, local files, archives",
        """\
        FROM alpine:3.20
        ADD https://example.com/tool.tar.gz /opt/
        ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d https://example.com/x /x
        ADD config.yaml /etc/app/
        ADD vendor.tar.gz /opt/vendor
        ADD ["two words.txt", "/srv/"]
        """,
        [(2, "add-url"), (4, "add-local"), (6, "add-local")],
    ),
    (
        "secret-looking names",
        """\
        FROM alpine:3.20
        ARG NPM_TOKEN
        ARG VERSION=1.0
        ARG GITHUB_API_KEY=
        ENV DB_PASSWORD hunter2
        ENV LOG_LEVEL=info SECRET_KEY_BASE="a b" PATH=/usr/bin
        ENV NEXT_PUBLIC_API_KEY=pk_live KEYBOARD=us
        ENV dbPassword=x
        """,
        [(2, "secret-arg"), (4, "secret-arg"), (5, "secret-env"), (6, "secret-env"), (8, "secret-env")],
    ),
    (
        "escape directive",
        """\
        # escape=`
        FROM mcr.microsoft.com/windows/servercore:ltsc2022
        COPY . C:\\app
        RUN pip install `
            -r C:\\app\\requirements.txt
        """,
        [(3, "copy-before-install")],
    ),
    (
        "an unfinished continuation at the end is still an instruction",
        """\
        FROM alpine:3.20
        RUN apt-get update \\
        """,
        [(2, "apt-update-alone")],
    ),
]


@pytest.mark.parametrize(("text", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_rules(text: str, expected: list[tuple[int, str]]) -> None:
    findings = lint_text(textwrap.dedent(text))
    assert [(f.line, f.rule) for f in findings] == expected


def test_copy_before_install_reads_as_one_line_with_the_fix() -> None:
    text = "FROM python:3.12\nWORKDIR /app\n\n# all of it\nCOPY . .\nENV PYTHONUNBUFFERED=1\n\nRUN pip install -r requirements.txt\n"
    (finding,) = lint_text(text)
    assert str(finding) == (
        "Dockerfile:5: [copy-before-install] COPY . copies the whole source before the dependency install "
        "on line 8, so every code change reinstalls dependencies. Fix: copy only requirements.txt "
        "(or pyproject.toml and its lock file) first, install, then COPY . for the rest."
    )


@pytest.mark.parametrize(
    ("install", "manifests"),
    [
        ("npm install", "package.json and package-lock.json"),
        ("yarn install --frozen-lockfile", "package.json and yarn.lock"),
        ("yarn", "package.json and yarn.lock"),
        ("pnpm i", "package.json and pnpm-lock.yaml"),
        ("go mod download", "go.mod and go.sum"),
        ("bundle install", "Gemfile and Gemfile.lock"),
        ("composer install --no-dev", "composer.json and composer.lock"),
        ("cargo fetch", "Cargo.toml and Cargo.lock"),
        (
            "python -m pip install -r requirements.txt",
            "requirements.txt (or pyproject.toml and its lock file)",
        ),
    ],
)
def test_the_fix_names_the_manifests_of_the_package_manager(install: str, manifests: str) -> None:
    (finding,) = lint_text(f"FROM base:1\nCOPY . .\nRUN {install}\n")
    assert finding.fix == f"copy only {manifests} first, install, then COPY . for the rest."


def test_system_packages_after_the_source_get_their_own_fix() -> None:
    (finding,) = lint_text("FROM alpine:3.20\nCOPY ./ /src\nRUN apk add --no-cache make\n")
    assert finding.message == (
        "COPY ./ copies the whole source before the package install on line 3, "
        "so every code change reinstalls the system packages."
    )
    assert finding.fix == "install system packages before COPY ./: they do not depend on your code."


def test_messages_of_the_other_rules() -> None:
    text = (
        "FROM node\nADD https://x.example/a.sh /a.sh\nADD a.conf /etc/\nENV API_TOKEN=x\nRUN apt-get update\n"
    )
    assert [str(f) for f in lint_text(text, file="docker/Dockerfile")] == [
        "docker/Dockerfile:1: [from-latest] FROM node has no tag, so it means node:latest, which moves: "
        "the same commit can build a different image, and a new base silently invalidates every cached "
        "layer. Fix: pin a version: FROM node:<version>, or a digest: FROM node@sha256:<digest>.",
        "docker/Dockerfile:2: [add-url] ADD downloads https://x.example/a.sh during the build without "
        "checking it against a checksum. Fix: download it in a RUN that verifies it "
        "(curl -fsSLo FILE URL && echo 'SHA256  FILE' | sha256sum -c -), or COPY a vendored copy.",
        "docker/Dockerfile:3: [add-local] ADD a.conf copies local files, which COPY does without ADD's "
        "implicit archive unpacking and URL fetching. Fix: use COPY a.conf /etc/.",
        "docker/Dockerfile:4: [secret-env] ENV API_TOKEN looks like a secret: ENV values are stored in the "
        "image config, where anyone who can pull the image reads them (docker inspect). Fix: remove it "
        "from the Dockerfile and list API_TOKEN in app.container.secrets, so it is set only when the "
        "container runs.",
        "docker/Dockerfile:5: [apt-update-alone] apt-get update runs in a RUN of its own: that layer stays "
        "cached, so a later install reads stale package lists and can fail when they expire. Fix: update "
        "and install in one RUN (RUN apt-get update && apt-get install -y ... && rm -rf "
        "/var/lib/apt/lists/*).",
    ]


def test_empty_and_comment_only_files_have_no_findings() -> None:
    assert lint_text("") == []
    assert lint_text("# nothing yet\n\n") == []


def test_finding_is_a_value() -> None:
    assert Finding(1, "r", "m.", "f.") == Finding(1, "r", "m.", "f.", "Dockerfile")


INVENTORY = """\
app:
  name: web
  image: registry.example.com/acme/web
  build: {context: app, dockerfile: docker/Dockerfile.prod}
hosts:
  web: [web1]
"""


def test_dockerfile_path_is_relative_to_the_context(tmp_path: Path) -> None:
    inventory = config.parse(INVENTORY, tmp_path / "inventory.yaml")
    assert inventory.dockerfile == tmp_path / "app" / "docker" / "Dockerfile.prod"


def test_lint_file_names_the_file_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "Dockerfile").write_text("FROM python\n")
    monkeypatch.chdir(tmp_path)
    (finding,) = lint_file(tmp_path / "app" / "Dockerfile")
    assert str(finding).startswith("app/Dockerfile:1: [from-latest] ")


def test_missing_dockerfile_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        lint_file(tmp_path / "Dockerfile")
    assert caught.value.message == f"{tmp_path / 'Dockerfile'}: no Dockerfile here"
    assert caught.value.hint is not None and "app.build.dockerfile" in caught.value.hint
