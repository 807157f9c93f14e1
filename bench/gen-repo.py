#!/usr/bin/env python3
"""Generates a config repo with N classic APIs and M policies (bench input).

usage: gen-repo.py DIR APIS POLICIES
Each API is a realistic ~1.2 KB classic definition; each policy grants
access to 10 APIs. The output is a Git repository with one commit.
"""
import json
import os
import subprocess
import sys


def api(i):
    return {
        "name": f"Service {i}",
        "api_id": f"svc-{i:05d}",
        "org_id": "default",
        "use_keyless": i % 3 == 0,
        "use_standard_auth": i % 3 != 0,
        "auth": {"auth_header_name": "Authorization"},
        "active": True,
        "enable_context_vars": False,
        "version_data": {
            "not_versioned": True,
            "versions": {"Default": {"name": "Default", "use_extended_paths": True,
                                     "extended_paths": {"ignored": [], "white_list": [], "black_list": []}}},
        },
        "proxy": {
            "listen_path": f"/svc-{i:05d}/",
            "target_url": f"http://svc-{i:05d}.internal:8080/",
            "strip_listen_path": True,
            "preserve_host_header": False,
        },
        "CORS": {"enable": False, "allowed_origins": ["*"], "allowed_methods": ["GET", "POST"]},
        "global_rate_limit": {"rate": 1000, "per": 1},
        "tags": ["bench", f"team-{i % 17}"],
        "config_data": {"owner": f"team-{i % 17}", "tier": "standard"},
    }


def policy(j, apis):
    ids = [f"svc-{(j * 10 + k) % apis:05d}" for k in range(10)]
    return {
        "id": f"pol-{j:04d}",
        "name": f"Policy {j}",
        "org_id": "default",
        "rate": 100,
        "per": 60,
        "quota_max": -1,
        "access_rights": {a: {"api_id": a, "api_name": a, "versions": ["Default"]} for a in ids},
    }


def main():
    out, apis, pols = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    os.makedirs(f"{out}/apps", exist_ok=True)
    os.makedirs(f"{out}/policies", exist_ok=True)
    for i in range(apis):
        with open(f"{out}/apps/svc-{i:05d}.json", "w") as f:
            json.dump(api(i), f, indent=2)
    for j in range(pols):
        with open(f"{out}/policies/pol-{j:04d}.json", "w") as f:
            json.dump(policy(j, apis), f, indent=2)
    env = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="b@b",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="b@b")
    subprocess.run(["git", "init", "-q", "-b", "main", out], check=True)
    subprocess.run(["git", "-C", out, "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", out, "commit", "-q", "-m", "generated"], check=True, env=env)


if __name__ == "__main__":
    main()
