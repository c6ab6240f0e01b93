"""The verbs of the project on this machine: version, init, lint, build, push."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deployer.cli.base import TagOption, app, session_of
from deployer.errors import ConfigError


@app.command()
def version() -> None:
    """Print the version of deploy and the commit it was built from."""
    from deployer.version import describe

    typer.echo(f"deploy {describe()}")


@app.command("init")
def init_command(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        typer.Option("--name", metavar="NAME", help="App name. (default: this directory's name, made valid)"),
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(
            "--image",
            metavar="REPOSITORY",
            help="Image repository, without a tag. (default: from the git remote origin on GitHub "
            "or GitLab, else registry.example.com/NAME)",
        ),
    ] = None,
) -> None:
    """Write a commented inventory for the app in this directory; an existing file is never overwritten."""
    from deployer import config, init, lint

    session = session_of(ctx)
    path = config.resolve_path(session.inventory_flag)
    choice = init.choose(Path.cwd(), name=name, image=image)
    text = init.render(choice.name, choice.image)
    inventory = init.validate(text, path)
    init.write(path, text)
    session.out.result(f"wrote {path}")
    session.out.progress(f"  app.name   {choice.name} ({choice.name_from})")
    session.out.progress(f"  app.image  {choice.image} ({choice.image_from})")
    try:
        for finding in lint.lint_file(inventory.dockerfile):
            session.out.warn(str(finding))
    except ConfigError as exc:
        session.out.warn(f"{exc.message}; deploy build needs one")
    session.out.progress("next:")
    for step in init.next_steps(path, choice):
        session.out.progress(f"  {step}")


@app.command()
def lint(ctx: typer.Context) -> None:
    """Point out what in the Dockerfile breaks layer caching, with the line and the fix."""
    from deployer import lint as linter

    session = session_of(ctx)
    inventory = session.inventory()
    findings = linter.lint_file(inventory.dockerfile)
    for finding in findings:
        session.out.result(str(finding))
    if not findings:
        session.out.progress("no findings")


@app.command()
def build(
    ctx: typer.Context,
    allow_dirty: Annotated[
        bool,
        typer.Option("--allow-dirty", help="Build uncommitted changes under a tag marked -dirty-."),
    ] = False,
    cache_from: Annotated[
        list[str] | None,
        typer.Option("--cache-from", metavar="IMAGE", help="Image to reuse layers from (pulled first)."),
    ] = None,
) -> None:
    """Build the image of the HEAD commit, tagged with its first 12 hex digits.

    With app.registry false, also put it into the registry this machine keeps for the app.
    """
    from deployer import config, images, lint, source

    session = session_of(ctx)
    inventory = session.inventory()
    revision = source.revision(inventory.base_dir / inventory.app.build.context, allow_dirty=allow_dirty)
    for finding in lint.lint_file(inventory.dockerfile):
        session.out.warn(str(finding))
    password = config.registry_password(inventory)
    with session.out.watching():
        built = images.build(
            inventory, revision, cache_from=cache_from or [], password=password, out=session.out
        )
    if inventory.app.no_registry:
        from deployer import local_registry

        with local_registry.serve(inventory.app.name, writable=True) as local:
            loaded = images.load_local(inventory, revision.tag, local.address, out=session.out)
        session.out.progress(f"{loaded.reference} is {loaded.digest} in the local registry ({local.storage})")
    session.out.result(built.reference)


@app.command()
def push(ctx: typer.Context, tag: TagOption = None) -> None:
    """Push the image of the HEAD commit (or --tag) and print its digest.

    With app.registry false there is nothing to push: it says so and exits 0.
    """
    from deployer import config, images, source

    session = session_of(ctx)
    inventory = session.inventory()
    if inventory.app.no_registry:
        session.out.result(
            "app.registry is false: there is no registry to push to, and nothing to do; "
            "deploy build keeps each image for deploy rollout, which sends it to the hosts itself"
        )
        return
    tag = tag or source.revision(inventory.base_dir / inventory.app.build.context, allow_dirty=True).tag
    password = config.registry_password(inventory)
    with session.out.watching():
        pushed = images.push(inventory, tag, password=password, out=session.out)
    session.out.result(f"{pushed.reference}@{pushed.digest}")
