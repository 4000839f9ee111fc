"""The API's prediction routes: create (``POST /v1/prediction``), get (the poll envelope) and
the best-effort cancel.

Each route passes the ``Gate``, turns the request into calls on the caller's ``Account``, and
answers with the contract's shapes (``wire``); a create hands its run to the ``Worker``. A get or
cancel sees only the caller's own predictions (``Accounts.lookup``): another account's id answers
as one that does not exist. The hostile switches that bend these answers (redirects, bad create
answers, hidden polls, failing polls, a wrong id) act here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json

from aiohttp import web

from runner.models import MODELS
from runner.simulator import answers, inputs, wire
from runner.simulator.accounts import Accounts
from runner.simulator.answers import NOT_FOUND, SERVER_ERROR, json_answer
from runner.simulator.config import SimConfig
from runner.simulator.faults import Faults
from runner.simulator.files import FileHost
from runner.simulator.gate import Gate
from runner.simulator.stats import SimStats
from runner.simulator.worker import Worker


class PredictionRoutes:
    """Create, get and cancel for one simulator. ``base_url`` (the API's, set by the simulator
    once it listens) goes into the envelope's ``urls``."""

    def __init__(
        self,
        config: SimConfig,
        stats: SimStats,
        accounts: Accounts,
        files: FileHost,
        gate: Gate,
        worker: Worker,
        faults: Faults,
    ) -> None:
        self.config = config
        self.stats = stats
        self.accounts = accounts
        self.files = files
        self.gate = gate
        self.worker = worker
        self.faults = faults
        self.base_url = ""

    def add_to(self, router: web.UrlDispatcher) -> None:
        """Route the prediction paths (a create with or without the trailing slash) here."""
        router.add_post("/v1/prediction", self.create)
        router.add_post("/v1/prediction/", self.create)
        router.add_get("/v1/prediction/{id}", self.get)
        router.add_post("/v1/prediction/{id}/cancel", self.cancel)

    def _redirect(self, request: web.Request, status: int, base: str) -> web.Response:
        """Send the client to the same path and query on ``base`` (another origin), before any
        accounting: the front door answers, not the API."""
        self.stats.redirects += 1
        return web.Response(
            status=status, headers={"Location": base.rstrip("/") + request.raw_path}
        )

    async def create(self, request: web.Request) -> web.Response:
        """Validate the body and the input against the model's schema, refuse at the cap or
        balance, then make the run and start its task; the answer may be bent by the create
        switches (``create_queue_delay``, ``create_bad_answer``, ``create_fault_rate``,
        ``create_delay``, ``create_answer_id``)."""
        c = self.config
        if c.redirect_creates_to is not None:
            return self._redirect(request, 307, c.redirect_creates_to)
        account = await self.gate.check(request, "create")
        if isinstance(account, web.Response):
            return account
        try:
            body = await request.json()
        except ValueError:  # includes JSONDecodeError and UnicodeDecodeError
            body = None
        if not isinstance(body, dict):
            return answers.error(c, 422, "invalid request body")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return answers.error(c, 400, "model is required")
        info = MODELS.get(model)
        if info is None:
            return json_answer(NOT_FOUND, 404)
        given = body.get("input")
        problem = inputs.validate_input(info.request_schema(), given)
        if problem is not None:
            return answers.error(c, 400, problem)
        if not isinstance(given, dict):  # the schema says type object; a schema may not
            return answers.error(c, 400, "input must be an object")
        refused = account.create_refusal()
        if refused is not None:
            status, answer = refused
            return answers.too_many(c, answer) if status == 429 else json_answer(answer, status)
        if c.create_queue_delay > 0:  # a gateway queue in front of the service
            await asyncio.sleep(c.create_queue_delay)
        bad = account.bad_answer()
        if bad is not None and not c.create_bad_answer_creates:
            return answers.bad_answer(bad)  # the server broke before it created anything
        loop = asyncio.get_running_loop()
        image_url = given.get(info.image_field)
        url = image_url if isinstance(image_url, str) else ""
        own = self.files.own_image(url, loop.time())
        image = own.data if own is not None else None
        digest = hashlib.sha256(image).hexdigest() if image is not None else None
        run = account.create(model, json.loads(json.dumps(given)), loop.time(), digest)
        self.worker.carry(account, run, url, own)
        fault = self.faults.create_fails()
        if c.create_delay > 0:
            await asyncio.sleep(c.create_delay)
        if fault:
            return web.Response(status=500, text="upstream error")
        if bad is not None:
            return answers.bad_answer(bad)
        return json_answer(
            {
                "status": "success",
                "message": "Prediction created successfully",
                "predictionID": c.create_answer_id or run.id,
            }
        )

    async def get(self, request: web.Request) -> web.Response:
        """The poll envelope, unless a poll switch (``redirect_polls_to``,
        ``poll_not_found_*``, ``poll_error_*``) answers otherwise."""
        c = self.config
        if c.redirect_polls_to is not None:
            return self._redirect(request, 302, c.redirect_polls_to)
        account = await self.gate.check(request, "get")
        if isinstance(account, web.Response):
            return account
        run = self.accounts.lookup(account, request.match_info["id"])
        if run is None:
            return answers.unknown_prediction(c)
        now = asyncio.get_running_loop().time()
        if account.poll_hidden(run, now):
            return json_answer(NOT_FOUND, 404)
        if account.poll_fails():
            status = c.poll_error_status
            return json_answer(SERVER_ERROR if status and status >= 500 else {}, status or 500)
        video_url = self.files.video_url(run)
        return json_answer(wire.envelope(run, now, video_url, self.base_url, c))

    async def cancel(self, request: web.Request) -> web.Response:
        """Best effort, as the real service: the answer says nothing of the outcome (poll it).

        An unknown id, or another account's, answers 500 (``helpful``: 404 ``Prediction not
        found``). A cancel that
        takes effect ends the prediction at its next status quantum, unless its own end comes
        first (``Account.cancel``, ``cancel_due``)."""
        c = self.config
        account = await self.gate.check(request, "cancel")
        if isinstance(account, web.Response):
            return account
        run = self.accounts.lookup(account, request.match_info["id"])
        if run is None:
            if c.error_bodies == "helpful":
                return json_answer({"error": "Prediction not found"}, 404)
            return json_answer(SERVER_ERROR, 500)
        loop = asyncio.get_running_loop()
        ended = run.ended is not None
        scheduled = run.cancel_at
        plan = account.cancel(run, loop.time())
        if plan.takes_effect_at is not None and plan.takes_effect_at != scheduled:
            if plan.takes_effect_at <= loop.time():
                account.cancel_due(run, loop.time())
            else:
                self.worker.cancel_later(account, run, plan.takes_effect_at)
        message = "Prediction cancelled successfully"
        if c.error_bodies == "helpful":
            message = (
                "Prediction already finished; nothing to cancel"
                if ended
                else "Cancel requested; poll the prediction for its outcome"
            )
        return json_answer(
            {"status": plan.answer_status, "message": message, "predictionID": run.id}
        )
