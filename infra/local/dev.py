#!/usr/bin/env python3
"""The whole vnmask system on one machine, all on 127.0.0.1 (what `make dev` runs).

- DynamoDB Local and moto (SQS, KMS), with the table, queues and key that template.yaml declares;
- the four functions under `cargo lambda watch`;
- a bridge that long-polls the order-events queue and invokes `assign` with SqsEvent batches,
  honouring partial batch failures (failed messages stay on the queue, and moto's redrive policy
  moves them to the DLQ after maxReceiveCount), as the Lambda event source mapping would;
- a timer that invokes `pool-refresh` (seeded with a static pool, so calls work at once);
- a consumer of the interactions queue, writing what the webhook publishes to interactions.log.

Ctrl-C (or SIGTERM) stops everything it started.
"""

import argparse
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import boto3
import botocore.exceptions
import yaml
# moto's own dependency: the local Telnyx key.
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parents[2]
# Two markets, as a platform in India and the US would run them: India's pairs need only voice
# (ExoPhone-style landline numbers, which carry no SMS), US pairs need voice and SMS.
MARKETS = "IN:voice,US:voice+sms"
STATIC_POOL = [
    *({"number": f"+9111400{n:05d}", "market": "IN", "capabilities": ["voice"]} for n in range(10, 16)),
    *({"number": f"+1415867{n:04d}", "market": "US", "capabilities": ["voice", "sms"]} for n in range(10, 14)),
]


def log(msg):
    print(f"[dev] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short-form tags (!Ref, !GetAtt, …) as plain values."""


CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def template_resources():
    with open(ROOT / "template.yaml") as f:
        return yaml.load(f, Loader=CfnLoader)["Resources"]


def read_env(path):
    env = {}
    for line in Path(path).read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = value
    return env


class Stack:
    def __init__(self, state_dir, lambda_port, refresh_seconds, orders_api_url, grace_seconds, visibility_seconds):
        self.orders_api_url = orders_api_url
        self.grace_seconds = grace_seconds
        self.visibility_seconds = visibility_seconds
        self.state = Path(state_dir)
        self.state.mkdir(parents=True, exist_ok=True)
        self.lambda_port = lambda_port or free_port()
        self.refresh_seconds = refresh_seconds
        self.stopping = threading.Event()
        self.watch = None
        self.env = {}

    # -- services -------------------------------------------------------------------------
    def start_services(self):
        env = dict(os.environ, VNMASK_LOCAL_DIR=str(self.state))
        subprocess.run([str(ROOT / "infra/local/services.sh"), "start"], check=True, env=env)
        self.aws_env = read_env(self.state / "services.env")
        os.environ.update(self.aws_env)

    def stop_services(self):
        env = dict(os.environ, VNMASK_LOCAL_DIR=str(self.state))
        subprocess.run([str(ROOT / "infra/local/services.sh"), "stop"], check=False, env=env)

    def client(self, service):
        return boto3.client(
            service,
            endpoint_url=self.aws_env[f"AWS_ENDPOINT_URL_{service.upper().replace('SECRETSMANAGER', 'SECRETS_MANAGER')}"],
            region_name=self.aws_env["AWS_REGION"],
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )

    # -- resources, as template.yaml declares them --------------------------------------------
    def create_resources(self):
        resources = template_resources()
        ddb, sqs, kms = self.client("dynamodb"), self.client("sqs"), self.client("kms")

        [table] = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::DynamoDB::Table"]
        self.table = "vnmask-local"
        ddb.create_table(
            TableName=self.table,
            AttributeDefinitions=table["AttributeDefinitions"],
            KeySchema=table["KeySchema"],
            GlobalSecondaryIndexes=table.get("GlobalSecondaryIndexes", []),
            BillingMode="PAY_PER_REQUEST",
        )
        ttl = table["TimeToLiveSpecification"]
        ddb.update_time_to_live(
            TableName=self.table,
            TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
        )

        queues = {name: r["Properties"] for name, r in resources.items() if r["Type"] == "AWS::SQS::Queue"}
        self.queues = {}
        for name, props in sorted(queues.items(), key=lambda kv: "RedrivePolicy" in kv[1]):
            attributes = {}
            if "VisibilityTimeout" in props:
                # Locally a failed batch comes back after seconds, not minutes, so that the
                # redrive to the DLQ can be watched (and tested).
                attributes["VisibilityTimeout"] = str(self.visibility_seconds)
            if "RedrivePolicy" in props:
                target = props["RedrivePolicy"]["deadLetterTargetArn"]
                # The template names its DLQ with !GetAtt; locally the only DLQ is OrderEventsDlq.
                dlq_arn = sqs.get_queue_attributes(
                    QueueUrl=self.queues["OrderEventsDlq"], AttributeNames=["QueueArn"]
                )["Attributes"]["QueueArn"]
                attributes["RedrivePolicy"] = json.dumps(
                    {"deadLetterTargetArn": target or dlq_arn, "maxReceiveCount": props["RedrivePolicy"]["maxReceiveCount"]}
                )
            self.queues[name] = sqs.create_queue(QueueName=f"vnmask-{name}", Attributes=attributes)["QueueUrl"]

        key_id = kms.create_key(Description="vnmask local data key")["KeyMetadata"]["KeyId"]

        def wrapped(name):
            out = kms.generate_data_key(
                KeyId=key_id, KeySpec="AES_256", EncryptionContext={"purpose": "vnmask", "key": name}
            )
            return base64.b64encode(out["CiphertextBlob"]).decode()

        self.env = {
            "VNMASK_TABLE": self.table,
            "VNMASK_HMAC_KEY": wrapped("hmac"),
            "VNMASK_DATA_KEYS": "k1=" + wrapped("data:k1"),
            "VNMASK_MARKETS": MARKETS,
            # Exotel sends India's numbers in national form (09812345678): the webhook reads them so.
            "VNMASK_EXOTEL_MARKET": "IN",
            # PIN recovery in both markets: lookup shows each participant their PIN, and a caller
            # without a route is asked for one.
            "VNMASK_PIN_MARKETS": "IN,US",
            "VNMASK_PIN_RECOVERY": "true",
            "VNMASK_GRACE_SECONDS": str(self.grace_seconds),
            "VNMASK_DLQ_URL": self.queues["OrderEventsDlq"],
            "VNMASK_NOTIFY_QUEUE_URL": self.queues["NotificationsQueue"],
            "VNMASK_INTERACTIONS_QUEUE_URL": self.queues["InteractionsQueue"],
            "VNMASK_PUBLIC_BASE_URL": f"http://127.0.0.1:{self.lambda_port}/lambda-url/webhook",
            "VNMASK_PROVIDERS": "static",
            # cargo lambda watch has no JWT authorizer: lookup takes claims from this header, and
            # only outside AWS Lambda (the function checks; template.yaml never sets it).
            "VNMASK_LOCAL_CLAIMS_HEADER": "x-vnmask-local-claims",
            "VNMASK_STATIC_NUMBERS": json.dumps(STATIC_POOL),
            "RUST_LOG": "info",
        }
        # Credentials made up for this run only. As in a deployment, the functions read them
        # from Secrets Manager (moto), never from their environment; dev.env hands them to the
        # try-it script and tests.
        self.credentials = {
            "VNMASK_TWILIO_AUTH_TOKENS": uuid.uuid4().hex,
            "VNMASK_EXOTEL_TOKENS": uuid.uuid4().hex,
            "VNMASK_GENERIC_SECRETS": uuid.uuid4().hex,
            "VNMASK_PLIVO_AUTH_TOKENS": uuid.uuid4().hex,
            "VNMASK_VONAGE_SIGNATURE_SECRETS": uuid.uuid4().hex,
        }
        # Telnyx signs with its private key; the webhook holds the public one. Locally, a key
        # made for this run: clients (try-it, tests) sign with its seed, from dev.env only.
        seed = os.urandom(32)
        public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.env["VNMASK_TELNYX_PUBLIC_KEYS"] = base64.b64encode(public).decode()
        self.client_only = {"VNMASK_TELNYX_DEV_SEED": seed.hex()}
        secret = self.client("secretsmanager").create_secret(
            Name=f"vnmask-local-{uuid.uuid4().hex[:8]}", SecretString=json.dumps(self.credentials)
        )
        self.env["VNMASK_SECRETS_ID"] = secret["ARN"]
        # Requests reach cargo lambda watch from 127.0.0.1, not from Exotel's addresses.
        self.env["VNMASK_LOCAL_DEVELOPMENT"] = "true"
        if self.orders_api_url:
            self.env["ORDERS_API_URL"] = self.orders_api_url

    # -- functions ------------------------------------------------------------------------------
    def start_functions(self):
        env = dict(os.environ, **self.aws_env, **self.env)
        env["PATH"] = f"{ROOT / '.venv/bin'}:{env['PATH']}"
        # Build first, so that no invocation waits on a compile (and vnctl is there for try-it).
        log("building the functions and vnctl")
        subprocess.run(
            ["cargo", "build", "-p", "assign", "-p", "webhook", "-p", "lookup", "-p", "pool-refresh", "-p", "vnctl"],
            cwd=ROOT, check=True,
        )
        cmd = ["cargo", "lambda", "watch", "-A", "127.0.0.1", "-P", str(self.lambda_port), "--ignore-changes"]
        log(f"starting the functions: {' '.join(cmd)}")
        self.watch = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True,
                                      stdout=open(self.state / "functions.log", "w"), stderr=subprocess.STDOUT)
        deadline = time.time() + 900
        while time.time() < deadline:
            if self.watch.poll() is not None:
                raise SystemExit(f"cargo lambda watch exited; see {self.state / 'functions.log'}")
            try:
                with socket.create_connection(("127.0.0.1", self.lambda_port), timeout=1):
                    return
            except OSError:
                time.sleep(0.5)
        raise SystemExit("cargo lambda watch did not listen within 15 minutes")

    def invoke(self, function, payload, timeout=120):
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.lambda_port}/2015-03-31/functions/{function}/invocations",
            data=json.dumps(payload).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")

    # -- the event source mapping, locally -------------------------------------------------------
    def bridge(self):
        sqs = self.client("sqs")
        queue = self.queues["OrderEventsQueue"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        while not self.stopping.is_set():
            try:
                got = sqs.receive_message(
                    QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=2,
                    AttributeNames=["All"], MessageAttributeNames=["All"],
                )
                messages = got.get("Messages", [])
                if not messages:
                    continue
                event = {"Records": [sqs_record(m, arn) for m in messages]}
                result = self.invoke("assign", event) or {}
                failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
                done = [m for m in messages if m["MessageId"] not in failed]
                if done:
                    sqs.delete_message_batch(
                        QueueUrl=queue,
                        Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
                    )
                log(f"assign: {len(messages)} events, {len(failed)} left for redelivery")
            except (urllib.error.URLError, OSError, ValueError) as e:
                # A failed invocation leaves the whole batch for redelivery, as Lambda does.
                log(f"assign invocation failed ({e}); the batch will be redelivered")
                self.stopping.wait(2)

    # -- a consumer of the interactions queue --------------------------------------------------
    def interactions(self):
        """Reads the interactions the webhook publishes into interactions.log (they carry no real
        number), so that the queue stays empty however long the stack runs."""
        sqs = self.client("sqs")
        queue = self.queues["InteractionsQueue"]
        with open(self.state / "interactions.log", "a") as out:
            while not self.stopping.is_set():
                try:
                    got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=2)
                    messages = got.get("Messages", [])
                    if not messages:
                        continue
                    out.writelines(m["Body"] + "\n" for m in messages)
                    out.flush()
                    sqs.delete_message_batch(
                        QueueUrl=queue,
                        Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
                    )
                except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
                    log(f"reading interactions failed: {e}")
                    self.stopping.wait(2)

    def refresh_pool(self):
        summary = self.invoke("pool-refresh", {"source": "vnmask.dev", "detail-type": "Scheduled Event", "detail": {}})
        log(f"pool-refresh: {json.dumps(summary)[:300]}")

    def timer(self):
        while not self.stopping.wait(self.refresh_seconds):
            try:
                self.refresh_pool()
            except (urllib.error.URLError, OSError, ValueError) as e:
                log(f"pool-refresh invocation failed: {e}")

    def write_env_file(self):
        """Everything a client needs to reach this stack (tests read it)."""
        info = dict(self.aws_env)
        info.update(self.env)
        info.update(self.credentials)
        info.update(self.client_only)
        info["VNMASK_LAMBDA_PORT"] = str(self.lambda_port)
        info["VNMASK_ORDER_EVENTS_QUEUE_URL"] = self.queues["OrderEventsQueue"]
        lines = [f"export {k}={shell_quote(v)}" for k, v in sorted(info.items())]
        (self.state / "dev.env").write_text("\n".join(lines) + "\n")

    def stop(self):
        self.stopping.set()
        if self.watch and self.watch.poll() is None:
            os.killpg(self.watch.pid, signal.SIGTERM)
            try:
                self.watch.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.watch.pid, signal.SIGKILL)
        self.stop_services()


def shell_quote(value):
    return "'" + str(value).replace("'", "'\\''") + "'"


def sqs_record(message, arn):
    attrs = message.get("Attributes", {})
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {
            "ApproximateReceiveCount": attrs.get("ApproximateReceiveCount", "1"),
            "SentTimestamp": attrs.get("SentTimestamp", str(int(time.time() * 1000))),
            "SenderId": attrs.get("SenderId", "local"),
            "ApproximateFirstReceiveTimestamp": attrs.get("ApproximateFirstReceiveTimestamp", str(int(time.time() * 1000))),
        },
        "messageAttributes": {},
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": "us-east-1",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-dir", default=str(ROOT / ".local/dev"), help="pids, logs and dev.env")
    parser.add_argument("--port", type=int, default=9000, help="cargo lambda watch port (0: any free port)")
    parser.add_argument("--refresh-seconds", type=int, default=300, help="how often the timer runs pool-refresh")
    parser.add_argument("--orders-api-url", help="the Orders service for lookup's fallback (a fake, locally)")
    parser.add_argument("--grace-seconds", type=int, default=1800, help="grace after an order ends")
    parser.add_argument("--visibility-seconds", type=int, default=5, help="order-events visibility timeout")
    args = parser.parse_args()

    stack = Stack(args.state_dir, args.port, args.refresh_seconds, args.orders_api_url,
                  args.grace_seconds, args.visibility_seconds)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    try:
        stack.start_services()
        stack.create_resources()
        stack.start_functions()
        # The first refresh seeds the static pool, so calls work as soon as we say we are ready.
        stack.refresh_pool()
        threading.Thread(target=stack.timer, daemon=True).start()
        threading.Thread(target=stack.bridge, daemon=True).start()
        threading.Thread(target=stack.interactions, daemon=True).start()
        stack.write_env_file()
        print_try_it(stack)
        (stack.state / "ready").write_text("ready\n")
        stopping.wait()
    finally:
        log("stopping")
        (stack.state / "ready").unlink(missing_ok=True)
        stack.stop()


def print_try_it(stack):
    base = f"http://127.0.0.1:{stack.lambda_port}"
    print(f"""
vnmask is running on 127.0.0.1.
  functions (cargo lambda watch)   {base}
  markets                          {MARKETS}
  webhook (Twilio voice)           {base}/lambda-url/webhook/v1/providers/twilio/voice
  webhook (Exotel Connect)         {base}/lambda-url/webhook/v1/providers/exotel/connect
  lookup                           {base}/lambda-url/lookup/v1/orders/{{order_id}}/contacts
  order-events queue               {stack.queues['OrderEventsQueue']}
  environment for clients          {stack.state / 'dev.env'}   (source it)
  logs                             {stack.state}/*.log

Try it (in another shell; see README.md "Try it"):
  source {stack.state / 'dev.env'}
  infra/local/try-it.sh

Ctrl-C stops everything.
""", flush=True)


if __name__ == "__main__":
    sys.exit(main())
