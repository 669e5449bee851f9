"""`longserve`: the command line client (the console script the package installs).

    longserve predict embedder "A cat sits on the mat."
    longserve transcribe podcast.mp3 -o podcast.srt --format srt
    longserve transcribe podcast.mp3 --follow        # each segment as it is transcribed
    longserve jobs list --status running
    longserve models

Exit codes are in EXIT_CODES (and docs/client.md); errors are one line on stderr,
from the server's error body.
"""

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import click

from longserve.api.jobs import ProgressView
from longserve.client import Client, ConnectionFailed, JobNotFinished, JobView, LongserveError, WaitTimeout
from longserve.client.core import API_KEY_ENV, DEFAULT_URL, URL_ENV, is_url
from longserve.client.formats import FORMATS, render, segment_text

OK, ERROR, USAGE, UNREACHABLE, CLIENT_ERROR, SERVER_ERROR, TIMEOUT, OVERLOADED = 0, 1, 2, 3, 4, 5, 6, 7
JOB_FAILED, JOB_CANCELLED, STILL_RUNNING, INTERRUPTED = 8, 9, 10, 130
EXIT_CODES = {
    OK: "success",
    ERROR: "any other error (e.g. a file that cannot be read)",
    USAGE: "bad command line",
    UNREACHABLE: "the server could not be reached",
    CLIENT_ERROR: "the server refused the request (4xx: unknown model, invalid input, ...)",
    SERVER_ERROR: "server error (5xx other than 503 and 504)",
    TIMEOUT: "the request timed out (504; the hint says what to do)",
    OVERLOADED: "the model stayed overloaded (503) through every retry",
    JOB_FAILED: "the job failed (or its result expired)",
    JOB_CANCELLED: "the job was cancelled",
    STILL_RUNNING: "--wait-timeout passed, or jobs result of a pending job: the job is still queued or running",
    INTERRUPTED: "Ctrl-C: the job was cancelled or left running, as chosen (its id is printed)",
}
INTERRUPT_CHOICES = ("ask", "cancel", "leave")


def exit_code(exc: LongserveError) -> int:
    if isinstance(exc, ConnectionFailed):
        return UNREACHABLE
    if isinstance(exc, WaitTimeout):
        return STILL_RUNNING
    if exc.status == 504:
        return TIMEOUT
    if exc.status == 503:
        return OVERLOADED
    if exc.type == "job_cancelled":
        return JOB_CANCELLED
    if exc.type in ("job_failed", "expired"):
        return JOB_FAILED
    return SERVER_ERROR if exc.status >= 500 else CLIENT_ERROR


def one_line(exc: LongserveError) -> str:
    status = f"{exc.status} " if exc.status else ""
    line = f"error: {status}{exc.type}: {exc.message}"
    if exc.hint and exc.hint not in exc.message:
        line += f" Hint: {exc.hint}"
    if exc.request_id:
        line += f" (request_id {exc.request_id})"
    return line.replace("\n", " ")


class Cli(click.Group):
    """Turns every client error into its one line and exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LongserveError as exc:
            click.echo(one_line(exc), err=True)
            ctx.exit(exit_code(exc))
        except (OSError, ValueError) as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(ERROR)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(INTERRUPTED)


def _epilog() -> str:
    return "\b\nExit codes:\n" + "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items())


@click.group(cls=Cli, epilog=_epilog())
@click.option(
    "--url", envvar=URL_ENV, default=DEFAULT_URL, show_default=True, help=f"The gateway's address (or ${URL_ENV})."
)
@click.option(
    "--api-key", envvar=API_KEY_ENV, default=None, help=f"Sent as 'Authorization: Bearer <key>' (or ${API_KEY_ENV})."
)
@click.pass_context
def cli(ctx: click.Context, url: str, api_key: Optional[str]) -> None:
    """Client for a longserve gateway: predict, transcribe, jobs, models."""
    ctx.obj = ctx.with_resource(Client(url, api_key))


# -- shared pieces ---------------------------------------------------------------


class FileOrUrl(click.ParamType):
    """A file that exists (streamed as the body), or an http(s):// or s3:// URL the server fetches."""

    name = "FILE|URL"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        if isinstance(value, Path) or is_url(str(value)):
            return value
        return click.Path(exists=True, dir_okay=False, path_type=Path).convert(value, param, ctx)


def body_options(func: Callable) -> Callable:
    """TEXT... (sent as {"texts": [...]}), --json, or --file: the request body."""
    options = [
        click.argument("texts", nargs=-1),
        click.option(
            "--json", "json_body", metavar="BODY", help="A JSON body; @PATH reads it from a file, - from stdin."
        ),
        click.option(
            "--file",
            "file",
            type=FileOrUrl(),
            help="Send this file as the raw body (e.g. audio; Content-Type guessed from its name), "
            "or a URL the server fetches (jobs).",
        ),
        click.option("--content-type", help="Content-Type for --file."),
        click.option(
            "--param", "params", multiple=True, metavar="NAME=VALUE", help="A query parameter, e.g. language=en."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def body_of(texts, json_body, file, content_type, params) -> dict:
    """Keyword arguments for Client.predict / submit."""
    given = [bool(texts), json_body is not None, file is not None]
    if sum(given) != 1:
        raise click.UsageError("give the input once: TEXT..., --json BODY, or --file PATH")
    query = {}
    for param in params:
        name, sep, value = param.partition("=")
        if not sep:
            raise click.UsageError(f"--param {param!r}: expected NAME=VALUE")
        query[name] = value
    kwargs: dict[str, Any] = {"params": query or None}
    if texts:
        kwargs["inputs"] = {"texts": list(texts)}
    elif file is not None:
        kwargs.update(content=file, content_type=content_type)
    else:
        raw = (
            sys.stdin.read()
            if json_body == "-"
            else Path(json_body[1:]).read_text()
            if json_body.startswith("@")
            else json_body
        )
        try:
            kwargs["inputs"] = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise click.UsageError(f"--json is not JSON: {exc}") from None
    return kwargs


def job_options(func: Callable) -> Callable:
    options = [
        click.option("--callback-url", help="POST the job here when it ends (passed to the server)."),
        click.option("--callback-events", type=click.Choice(["completed", "all"]), help="Which events to POST."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def wait_options(func: Callable) -> Callable:
    options = [
        click.option(
            "--progress/--no-progress",
            default=None,
            help="Show a progress bar on stderr (default: when stderr is a terminal).",
        ),
        click.option("--wait-timeout", type=float, help="Stop waiting after this many seconds (exit 10)."),
        click.option(
            "--on-interrupt",
            type=click.Choice(INTERRUPT_CHOICES),
            default=None,
            help="Ctrl-C while waiting: ask (default when stdin is a terminal), cancel the job, "
            "or leave it running (default otherwise).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def output_options(default_format: str) -> Callable:
    def decorate(func: Callable) -> Callable:
        func = click.option(
            "--format",
            "fmt",
            type=click.Choice(FORMATS),
            default=default_format,
            show_default=True,
            help="How to write the result.",
        )(func)
        return click.option(
            "-o",
            "--output",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Write the result to this file instead of stdout.",
        )(func)

    return decorate


def emit(result: Any, fmt: str, output: Optional[Path]) -> None:
    text = render(result, fmt)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
        click.echo(f"wrote {output}", err=True)


class ProgressBar:
    """on_progress for Client.wait: a tqdm bar of progress.done / total on stderr
    (seconds of audio for the transcriber), with the ETA. Remembers the job."""

    def __init__(self, enabled: Optional[bool]):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.bar: Any = None  # a tqdm bar, made on the first update
        self.job: Optional[JobView] = None

    def __call__(self, job: JobView) -> None:
        first, self.job = self.job is None, job
        if first:  # said only once the job is remembered: a Ctrl-C after this line can cancel it
            click.echo(f"job {job.id} ({job.model}) {job.status}", err=True)
        if not self.enabled:
            return
        from tqdm import tqdm

        progress = job.progress
        if self.bar is None:
            self.bar = tqdm(total=None, file=sys.stderr, bar_format="{desc} [{elapsed}]", dynamic_ncols=True)
        if progress.total and self.bar.total != progress.total:
            # Known once running: restart the clock there, so the ETA is the run's.
            self.bar.reset(total=progress.total)
            self.bar.bar_format = "{desc} {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}]"
        self.bar.set_description_str(job.status, refresh=False)
        self.bar.n = min(progress.done, progress.total or progress.done)
        self.bar.refresh()

    def write(self, text: str) -> None:
        """`text` on stdout; the bar on stderr is cleared first and drawn again after, not torn."""
        if self.bar is None:
            click.echo(text, nl=False)
            sys.stdout.flush()  # each segment as it comes, also into a pipe
            return
        from tqdm import tqdm

        tqdm.write(text, file=sys.stdout, end="")
        sys.stdout.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def interrupted(client: Client, job: Optional[JobView], choice: Optional[str]) -> None:
    """Ctrl-C while waiting on `job`: cancel it or leave it running, then exit 130."""
    if job is None:
        raise KeyboardInterrupt
    if choice is None:
        choice = "ask" if sys.stdin.isatty() else "leave"
    if choice == "ask":
        try:
            cancel = click.confirm(f"\nCancel job {job.id}? (no: leave it running)", default=False, err=True)
        except click.Abort:  # a second Ctrl-C, or no answer on stdin
            cancel = False
        choice = "cancel" if cancel else "leave"
    if choice == "cancel":
        try:
            job = client.cancel(job)
            click.echo(f"cancelled job {job.id}", err=True)
        except LongserveError as exc:
            click.echo(f"could not cancel job {job.id}: {one_line(exc)}", err=True)
    else:
        click.echo(f"job {job.id} left running; follow it with: longserve jobs wait {job.id}", err=True)
    sys.exit(INTERRUPTED)


def waiting(
    client: Client, call: Callable[[ProgressBar], Any], progress: Optional[bool], on_interrupt: Optional[str]
) -> Any:
    """Run `call(bar)`, which waits on a job reporting to `bar`; handle Ctrl-C."""
    bar = ProgressBar(progress)
    try:
        return call(bar)
    except KeyboardInterrupt:
        bar.close()
        interrupted(client, bar.job, on_interrupt)
    finally:
        bar.close()


def follow_job(client: Client, job: JobView, bar: ProgressBar, fmt: str) -> JobView:
    """Follow `job`'s events until it ends: each partial written on stdout as it comes (a
    transcript's segments in `fmt`), status and progress to `bar`. The job's final view."""
    bar(job)
    number = 0
    for event in client.jobs.events(job):
        if event.type == "partial":
            number += 1
            bar.write(segment_text(event.data, fmt, number))
        elif event.type == "status":
            job = job.model_copy(update={"status": event.data["status"]})
            bar(job)
        elif event.type == "progress":
            job = job.model_copy(update={"progress": ProgressView.model_validate(event.data)})
            bar(job)
        elif event.type in ("result", "error"):  # the last event: the job's view
            return JobView.model_validate(event.data)
    return client.job(job)  # not reached: the events end with result or error


def finished(job: JobView, client: Optional[Client] = None) -> Any:
    """The result of a job `wait` returned, or exit with the job's outcome."""
    if job.status == "succeeded":
        # A large result is not in the job (result_size instead): it is downloaded.
        return client.result(job) if job.result_size is not None and client is not None else job.result
    message = (job.error or {}).get("message", "")
    click.echo(f"error: job {job.id} {job.status}" + (f": {message}" if message else ""), err=True)
    sys.exit(JOB_CANCELLED if job.status == "cancelled" else JOB_FAILED)


# -- commands ------------------------------------------------------------------------


@cli.command()
@click.argument("model")
@body_options
@click.option("--request-timeout", type=float, help="Send 'Request-Timeout: <seconds>' (capped by max_timeout).")
@click.option(
    "--prefer-wait",
    type=float,
    metavar="N",
    help="'Prefer: wait=N': if not done in N s the work becomes a job, which is then waited for.",
)
@click.option(
    "--stream",
    is_flag=True,
    help="Stream the model's partial outputs: each printed as a JSON line as it comes, then the result.",
)
@wait_options
@output_options("json")
@click.pass_obj
def predict(
    client: Client,
    model,
    texts,
    json_body,
    file,
    content_type,
    params,
    request_timeout,
    prefer_wait,
    stream,
    progress,
    wait_timeout,
    on_interrupt,
    output,
    fmt,
):
    """Run MODEL on TEXT... ({"texts": [...]}), --json BODY or --file PATH and print the result."""
    kwargs = body_of(texts, json_body, file, content_type, params)
    if stream:
        if prefer_wait is not None:
            raise click.UsageError("--stream is one request; --prefer-wait may make it a job: use one or the other")
        result = None
        for event in client.predict(model, **kwargs, request_timeout=request_timeout, stream=True):
            if event.type == "partial":
                click.echo(json.dumps(event.data, ensure_ascii=False))
            else:
                result = event.data
        emit(result, fmt, output)
        return
    result = waiting(
        client,
        lambda bar: client.predict(
            model,
            **kwargs,
            request_timeout=request_timeout,
            prefer_wait=prefer_wait,
            on_progress=bar,
            wait_timeout=wait_timeout,
        ),
        progress,
        on_interrupt,
    )
    emit(result, fmt, output)


@cli.command()
@click.argument("audio", type=FileOrUrl())
@click.option("--model", default="transcriber", show_default=True)
@click.option("--language", help="ISO code such as 'en'; detected when omitted.")
@click.option("--sync", is_flag=True, help="One sync request (bounded by the timeout in force) instead of a job.")
@click.option("--request-timeout", type=float, help="With --sync: send 'Request-Timeout: <seconds>'.")
@click.option(
    "--prefer-wait",
    type=float,
    metavar="N",
    help="Sync request with 'Prefer: wait=N': the transcript if done in N s, else a job to wait for.",
)
@click.option(
    "--follow",
    is_flag=True,
    help="Print each segment on stdout as it is transcribed (in --format: text lines, SRT or WebVTT cues, "
    "JSON lines) instead of the whole transcript at the end; -o still gets the whole transcript.",
)
@job_options
@wait_options
@output_options("text")
@click.pass_obj
def transcribe(
    client: Client,
    audio,
    model,
    language,
    sync,
    request_timeout,
    prefer_wait,
    follow,
    callback_url,
    callback_events,
    progress,
    wait_timeout,
    on_interrupt,
    output,
    fmt,
):
    """Transcribe AUDIO (any format the server decodes; a file, streamed, or a URL the server fetches):
    submit a job, show its progress, print the transcript."""
    params = {"language": language} if language else {}
    if isinstance(audio, str) and (sync or request_timeout is not None):
        raise click.UsageError("a URL is fetched by a job: drop --sync/--request-timeout (or use --prefer-wait)")
    if callback_url and prefer_wait is not None:  # the job it may become calls back
        params.update(callback_url=callback_url, **({"callback_events": callback_events} if callback_events else {}))
    elif callback_url and (sync or request_timeout is not None):
        raise click.UsageError("--callback-url needs a job: drop --sync/--request-timeout, or use --prefer-wait")
    if follow and (sync or request_timeout is not None or prefer_wait is not None or wait_timeout is not None):
        raise click.UsageError(
            "--follow follows a job to its end: drop --sync, --request-timeout, --prefer-wait and --wait-timeout"
        )
    if sync or request_timeout is not None or prefer_wait is not None:
        result = waiting(
            client,
            lambda bar: client.predict(
                model,
                content=audio,
                params=params or None,
                request_timeout=request_timeout,
                prefer_wait=prefer_wait,
                on_progress=bar,
                wait_timeout=wait_timeout,
            ),
            progress,
            on_interrupt,
        )
    else:
        job = client.submit(
            model, content=audio, params=params or None, callback_url=callback_url, callback_events=callback_events
        )
        if follow:
            followed = waiting(client, lambda bar: follow_job(client, job, bar, fmt), progress, on_interrupt)
            result = finished(followed, client)
            if output is not None:
                emit(result, fmt, output)
            return
        result = finished(
            waiting(client, lambda bar: client.wait(job, wait_timeout, bar), progress, on_interrupt), client
        )
    emit(result, fmt, output)


@cli.group()
def jobs():
    """Async jobs: submit, status, wait, result, cancel, list."""


@jobs.command("submit")
@click.argument("model")
@body_options
@click.option("--ttl", "ttl_s", type=float, help="Keep the finished job this long (s).")
@click.option("--metadata", help="A JSON object stored with the job.")
@click.option("--idempotency-key", help="The same key and body give the same job.")
@job_options
@click.pass_obj
def jobs_submit(
    client: Client,
    model,
    texts,
    json_body,
    file,
    content_type,
    params,
    ttl_s,
    metadata,
    idempotency_key,
    callback_url,
    callback_events,
):
    """Submit a job; print its id (stdout), e.g. ID=$(longserve jobs submit ...)."""
    kwargs = body_of(texts, json_body, file, content_type, params)
    job = client.submit(
        model,
        **kwargs,
        ttl_s=ttl_s,
        metadata=json.loads(metadata) if metadata else None,
        idempotency_key=idempotency_key,
        callback_url=callback_url,
        callback_events=callback_events,
    )
    click.echo(job.id)


@jobs.command("status")
@click.argument("job_id")
@click.option("--wait", type=float, help="Long-poll: answer once the status or progress changes, within N s.")
@click.pass_obj
def jobs_status(client: Client, job_id, wait):
    """Print the job (JSON)."""
    click.echo(client.job(job_id, wait).model_dump_json(indent=2, exclude_none=True))


@jobs.command("wait")
@click.argument("job_id")
@wait_options
@output_options("json")
@click.pass_obj
def jobs_wait(client: Client, job_id, progress, wait_timeout, on_interrupt, output, fmt):
    """Wait for the job (progress bar), then print its result; exit 8 / 9 if it failed / was cancelled."""
    job = waiting(client, lambda bar: client.wait(job_id, wait_timeout, bar), progress, on_interrupt)
    emit(finished(job, client), fmt, output)


@jobs.command("result")
@click.argument("job_id")
@output_options("json")
@click.pass_obj
def jobs_result(client: Client, job_id, output, fmt):
    """Print the result of a finished job (exit 10 while it is pending)."""
    try:
        result = client.result(job_id)
    except JobNotFinished as exc:
        click.echo(f"error: job {job_id} is still {exc.job.status}", err=True)
        sys.exit(STILL_RUNNING)
    emit(result, fmt, output)


@jobs.command("cancel")
@click.argument("job_id")
@click.pass_obj
def jobs_cancel(client: Client, job_id):
    """Cancel a queued or running job."""
    job = client.cancel(job_id)
    click.echo(f"job {job.id} {job.status}")


def table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


@jobs.command("list")
@click.option("--model")
@click.option("--status", type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled", "expired"]))
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--cursor", type=int, help="next_cursor of the previous page.")
@click.pass_obj
def jobs_list(client: Client, model, status, limit, cursor):
    """List jobs, newest first."""
    page = client.jobs(model, status, limit, cursor)
    rows = [
        [
            j.id,
            j.model,
            j.status,
            f"{j.progress.fraction:.0%}" if j.progress.fraction is not None else None,
            j.created_at,
            j.run_s,
        ]
        for j in page.jobs
    ]
    click.echo(table(["ID", "MODEL", "STATUS", "PROGRESS", "CREATED", "RUN_S"], rows))
    if page.next_cursor:
        click.echo(f"more: --cursor {page.next_cursor}", err=True)


def p99(latency: Optional[dict], kind: str) -> Optional[str]:
    value = ((latency or {}).get(kind) or {}).get("latency_s", {}).get("p99")
    return None if value is None else f"{value:.3f}"


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the full ModelList as JSON.")
@click.pass_obj
def models(client: Client, as_json):
    """The served models: timeout in force and where it was set, queue limits, job backlog, p99 latency (s)."""
    listing = client.models()
    if as_json:
        click.echo(listing.model_dump_json(indent=2, by_alias=True))
        return
    rows = [
        [
            m.name,
            "none" if m.timeout_s is None else f"{m.timeout_s:g}",
            m.timeout_source,
            f"{m.max_ongoing_requests}/{m.max_queued_requests}",
            f"{m.jobs.queued}/{m.jobs.running}",
            p99(m.latency, "sync"),
            p99(m.latency, "job"),
        ]
        for m in listing.models
    ]
    click.echo(table(["MODEL", "TIMEOUT_S", "TIMEOUT_SOURCE", "RUN/QUEUE", "JOBS_Q/R", "P99_SYNC", "P99_JOB"], rows))


def main() -> None:
    cli(prog_name="longserve")


if __name__ == "__main__":
    main()
