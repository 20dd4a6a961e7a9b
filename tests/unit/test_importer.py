"""Importing original Loom / Coopr exports: the shipped sample, old-Loom shapes, scripts, names."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from loom.errors import LoomError
from loom.solver import solve
from loom.spec.import_cli import add_import_command
from loom.spec.importer import ImportConflict, detect_kind, import_export, sanitize_name, split_entities
from loom.spec.importer import ImportReport
from loom.spec.loader import load_catalog
from loom.spec.models import CreateRequest

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "coopr" / "hadoop-export.json"
BASH = shutil.which("bash") or "/bin/bash"  # the project needs bash (the Makefile runs it)


def read(root: Path, rel: str) -> dict[str, Any]:
    return yaml.safe_load((root / rel).read_text(encoding="utf-8"))


def all_text(root: Path) -> str:
    return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in sorted(root.rglob("*")) if p.is_file())


@pytest.fixture
def sample(tmp_path: Path) -> tuple[Path, ImportReport]:
    out = tmp_path / "templates"
    return out, import_export(SAMPLE, out)


# --- the shipped sample ------------------------------------------------------------------------


def test_sample_imports_without_problems(sample: tuple[Path, ImportReport]) -> None:
    out, report = sample
    catalog = load_catalog(out)
    assert catalog.problems == [] and report.problems == []
    assert sorted(catalog.providers) == ["aws-us-east-1", "openstack"]
    assert sorted(catalog.hardwaretypes) == ["large", "medium", "small"]
    assert sorted(catalog.imagetypes) == ["centos6", "ubuntu12"]
    assert len(catalog.services) == 8 and sorted(catalog.clustertemplates) == ["hadoop-hbase"]
    assert catalog.partialtemplates["base-partial"].immutable
    for path in out.rglob("*.yaml"):
        kind = path.parent.name
        assert path.read_text().startswith(f"# yaml-language-server: $schema=../schemas/{kind}.schema.json\n")
    assert len(report.written) == len(list(p for p in out.rglob("*") if p.is_file()))


def test_sample_key_fields_round_trip(sample: tuple[Path, ImportReport]) -> None:
    out, report = sample
    catalog = load_catalog(out)
    assert catalog.providers["openstack"].driver == "openstack"
    aws = catalog.providers["aws-us-east-1"]
    assert (aws.driver, aws.connection, aws.options) == ("ec2", "aws-us-east-1", {})  # region: Connection extra
    assert catalog.hardwaretypes["large"].providermap["aws-us-east-1"].flavor == "m3.xlarge"
    assert catalog.imagetypes["ubuntu12"].providermap["aws-us-east-1"].sshuser == "ubuntu"
    assert catalog.imagetypes["centos6"].providermap["aws-us-east-1"].sshuser == "root"  # model default

    datanode = catalog.services["hadoop-hdfs-datanode"]
    assert datanode.dependencies.install.requires == ["base"]
    assert datanode.dependencies.runtime.requires == ["hadoop-hdfs-namenode"]
    assert catalog.services["hadoop-hdfs-namenode"].dependencies.provides == ["hadoop-client"]
    master = catalog.services["hbase-master"].dependencies.runtime
    assert master.requires == ["hadoop-hdfs-namenode", "zookeeper-server"] and master.uses == ["hadoop-hdfs-datanode"]

    start = catalog.services["hbase-master"].actions["start"]
    assert start.type == "shell" and start.script == "scripts/hbase-master/start.sh"
    assert json.loads(start.args[0]) == {"coopr": {"node": {"services": {"hbase-master": "start"}}}}
    assert catalog.services["hbase-master"].actions["install"].args == []  # no attributes: no argument
    script = (out / "services" / start.script).read_text()
    assert "run_list='recipe[hadoop_wrapper::default],recipe[hadoop::hbase_master],recipe[coopr_service_manager::default]'" in script
    assert "chef-solo -c" in script and os.access(out / "services" / start.script, os.X_OK)
    assert set(catalog.services["hadoop-hdfs-namenode"].actions) == {"install", "configure", "initialize", "start", "stop"}

    template = catalog.template("hadoop-hbase")
    lease = template.administration.leaseduration
    assert (lease.initial, lease.max, lease.step) == ("1w", "30d", "1d")
    assert lease.seconds() == (7 * 86400, 30 * 86400, 86400)
    assert template.constraints.size.min == 3 and template.constraints.size.max == 100
    assert template.constraints.services["hadoop-hdfs-namenode"].quantities.max == 1
    assert "base" in template.defaults.services and template.immutable_config  # merged from the partial
    hdfs = template.defaults.config["hadoop"]["hdfs_site"]
    assert hdfs["dfs.namenode.rpc-bind-host"] == "%ip.self%"
    assert template.links[0].url == "http://%ip.service.hadoop-hdfs-namenode%:50070"
    assert "bind_v4" not in all_text(out) and "access_v4" not in all_text(out)
    assert any("hardwaretypes/large: providermap.aws-us-east-1: cost, ram, vcpu" in d for d in report.dropped)


def test_sample_credentials_are_not_written(sample: tuple[Path, ImportReport]) -> None:
    out, report = sample
    doc = json.loads(SAMPLE.read_text())
    secrets = [
        value
        for provider in doc["providers"]
        for key, value in provider["provisioner"].items()
        if value and not key.endswith("_region")
    ]
    assert len(secrets) >= 8
    text = all_text(out)
    for value in secrets:
        assert value not in text, f"provisioner value {value!r} leaked into the output"
    assert "\n".join(report.lines()).count("s3cr3t") == 0
    todo = [t for t in report.todo if t.startswith("providers/openstack:")]
    assert todo and all(f in todo[0] for f in ("api_user", "api_password", "openstack_tenant", "openstack_auth_url"))
    assert "Airflow Connection 'openstack'" in todo[0]


def test_sample_layout_satisfies_constraints(sample: tuple[Path, ImportReport]) -> None:
    out, _ = sample
    catalog = load_catalog(out)
    layout = solve(catalog.template("hadoop-hbase"), CreateRequest(cluster="h1", size=6), catalog)
    assert len(layout.nodes) == 6 and layout.provider == "openstack"

    def on(service: str) -> set[str]:
        return {n.hostname for n in layout.nodes if service in n.services}

    assert len(on("hadoop-hdfs-namenode")) == 1
    assert len(on("hadoop-yarn-resourcemanager")) == 1 and len(on("hbase-master")) == 1
    assert on("hadoop-hdfs-datanode") == on("hadoop-yarn-nodemanager") == on("hbase-regionserver")
    assert len(on("hadoop-hdfs-datanode")) == 5
    assert not on("hadoop-hdfs-namenode") & on("hadoop-hdfs-datanode")
    assert on("base") == {n.hostname for n in layout.nodes}
    namenode = next(n for n in layout.nodes if "hadoop-hdfs-namenode" in n.services)
    assert namenode.hardwaretype == "large" and namenode.flavor == "m1.large"


def test_generated_chef_script_runs_chef_solo_with_merged_attributes(sample: tuple[Path, ImportReport], tmp_path: Path) -> None:
    out, _ = sample
    catalog = load_catalog(out)
    action = catalog.services["hbase-master"].actions["start"]
    fake_bin, cookbooks, seen = tmp_path / "bin", tmp_path / "cookbooks", tmp_path / "seen"
    fake_bin.mkdir()
    cookbooks.mkdir()
    (fake_bin / "chef-solo").write_text(
        "#!/usr/bin/env bash\n"
        f'printf "%s\\n" "$@" >{seen}.args\n'
        'while [ $# -gt 0 ]; do case $1 in -j) cp "$2" ' + f"{seen}.json" + '; shift;; -c) cp "$2" ' + f"{seen}.rb" + "; shift;; esac; shift; done\n"
    )
    (fake_bin / "chef-solo").chmod(0o755)
    config = {"hadoop": {"core_site": {"fs.defaultFS": "hdfs://h1-1"}}}
    env = {
        **os.environ,
        "PATH": f"{fake_bin}:{os.environ['PATH']}",
        "LOOM_CONFIG": json.dumps(config),
        "LOOM_HOST": "h1-1",
        "LOOM_CLUSTER": "h1",
        "LOOM_CHEF_COOKBOOKS": str(cookbooks),
    }
    done = subprocess.run([BASH, str(out / "services" / action.script), *action.args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    args = Path(f"{seen}.args").read_text().split("\n")
    assert args[args.index("-o") + 1] == "recipe[hadoop_wrapper::default],recipe[hadoop::hbase_master],recipe[coopr_service_manager::default]"
    attrs = json.loads(Path(f"{seen}.json").read_text())
    assert attrs["coopr"]["node"]["services"] == {"hbase-master": "start"}
    assert attrs["coopr"]["cluster"] == config and attrs["coopr"]["hostname"] == "h1-1"
    assert attrs["hadoop"] == config["hadoop"]  # cluster config merged at the top, as Coopr did
    assert f'cookbook_path "{cookbooks}"' in Path(f"{seen}.rb").read_text()

    env["PATH"] = "/usr/bin:/bin"
    if shutil.which("chef-solo", path=env["PATH"]) is None:
        failed = subprocess.run([BASH, str(out / "services" / action.script)], env=env, capture_output=True, text=True)
        assert failed.returncode == 1 and "chef-solo is not installed" in failed.stderr


# --- old Loom shapes, single entities ----------------------------------------------------------


def test_old_loom_single_service_with_dependson(tmp_path: Path) -> None:
    old = {
        "name": "apache-httpd",
        "description": "Apache HTTP Server",
        "dependson": ["base"],
        "provisioner": {
            "actions": {
                "install": {"type": "chef", "script": "recipe[apache2::default]", "data": ""},
                "start": {
                    "type": "chef",
                    "script": "recipe[apache2::default], recipe[loom_service_runner::default]",
                    "data": '{"loom": { "node": { "services": { "apache2": "start" } } } }',
                },
            }
        },
    }
    assert detect_kind(old) == "services"
    out = tmp_path / "templates"
    report = import_export(old, out)
    data = read(out, "services/apache-httpd.yaml")
    assert data["dependencies"] == {"install": {"requires": ["base"]}, "runtime": {"requires": ["base"]}}
    assert data["actions"]["start"]["args"] == ['{"loom":{"node":{"services":{"apache2":"start"}}}}']
    script = (out / "services" / data["actions"]["start"]["script"]).read_text()
    assert "run_list='recipe[apache2::default],recipe[loom_service_runner::default]'" in script
    assert any("dependson" in line for line in report.converted)
    # base is not part of this export: the validation of the output says so
    assert any("'base' is provided by no service" in p for p in report.problems)


def test_old_loom_provider_auth_unknown_type_and_rename(tmp_path: Path) -> None:
    old = {
        "name": "My.Cloud",
        "providertype": "vsphere",
        "provisioner": {"auth": {"vsphere_user": "admin", "vsphere_password": "pw-do-not-leak-42"}},
    }
    out = tmp_path / "templates"
    report = import_export({"provider": old}, out)
    data = read(out, "providers/my-cloud.yaml")
    assert data["driver"] == "vsphere" and data["connection"] == "my-cloud" and "options" not in data
    assert "pw-do-not-leak-42" not in all_text(out) and "admin" not in all_text(out)
    assert any("'vsphere' is not a known Loom provider type" in t for t in report.todo)
    assert any("vsphere_password, vsphere_user" in t for t in report.todo)
    assert "provider 'My.Cloud' -> 'my-cloud' (references renamed too)" in report.renamed
    assert load_catalog(out).problems == [
        "templates/providers/my-cloud.yaml: driver: provider 'my-cloud': driver 'vsphere' is not supported; "
        "supported cloud drivers: ec2, gce, openstack, digitalocean, azure_arm, linode (plus 'local' and 'static')"
    ]


# --- shell actions and scripts -----------------------------------------------------------------


def shell_service(script: str = "/var/cache/coopr/shell_automator/scripts/setup_disks.sh") -> dict[str, Any]:
    return {
        "name": "disks",
        "dependencies": {"install": {"requires": [], "uses": []}},
        "provisioner": {
            "actions": {
                "install": {"type": "shell", "fields": {"script": script, "args": "--fs ext4 '%host.self%'"}},
                "configure": {"type": "puppet", "fields": {"manifest": "disks.pp"}},
            }
        },
    }


def test_missing_shell_script_is_reported_and_the_stub_fails(tmp_path: Path) -> None:
    out = tmp_path / "templates"
    report = import_export(shell_service(), out)
    data = read(out, "services/disks.yaml")
    install = data["actions"]["install"]
    assert install == {"type": "shell", "script": "scripts/disks/setup_disks.sh", "args": ["--fs", "ext4", "%host.self%"]}
    assert any("setup_disks.sh' is not in the export" in t and "write services/scripts/disks/setup_disks.sh" in t for t in report.todo)
    assert any("automator type 'puppet' is not supported (fields: manifest)" in t for t in report.todo)
    for script in ("setup_disks.sh", "configure.sh"):
        done = subprocess.run([BASH, str(out / "services/scripts/disks" / script)], capture_output=True, text=True)
        assert done.returncode == 1 and "not implemented" in done.stderr
    assert load_catalog(out).problems == []  # loads: the stubs exist; they fail at run time


def test_shell_script_is_copied_from_the_scripts_folder(tmp_path: Path) -> None:
    scripts = tmp_path / "export" / "scripts"
    scripts.mkdir(parents=True)
    (scripts / "setup_disks.sh").write_text("#!/bin/sh\necho formatting\n")
    export = tmp_path / "export" / "disks.json"
    export.write_text(json.dumps({"services": [shell_service("setup_disks.sh --verbose")]}))
    out = tmp_path / "templates"
    report = import_export(export, out)  # scripts/ beside the export is found by default
    install = read(out, "services/disks.yaml")["actions"]["install"]
    assert install["args"] == ["--verbose", "--fs", "ext4", "%host.self%"]
    assert (out / "services/scripts/disks/setup_disks.sh").read_text() == "#!/bin/sh\necho formatting\n"
    assert not any("setup_disks" in t for t in report.todo)
    assert any("copied to services/scripts/disks/setup_disks.sh" in c for c in report.converted)


def test_a_real_script_is_never_replaced_by_a_stub(tmp_path: Path) -> None:
    out = tmp_path / "templates"
    import_export(shell_service(), out)
    real = out / "services/scripts/disks/setup_disks.sh"
    real.write_text("#!/bin/sh\necho the real thing\n")
    report = import_export(shell_service(), out, force=True)
    assert real.read_text() == "#!/bin/sh\necho the real thing\n"
    assert not any("setup_disks" in t for t in report.todo)


# --- names, overwrite, unknown fields, details ------------------------------------------------


def test_names_are_sanitised_and_references_follow(tmp_path: Path) -> None:
    doc = {
        "providers": [{"name": "Local", "providertype": "openstack", "provisioner": {}}],
        "hardwaretypes": [{"name": "Large.8GB", "providermap": {"Local": {"flavor": 6}}}],
        "imagetypes": [{"name": "CentOS 6", "providermap": {"Local": {"image": "img-1"}}}],
        "services": [
            {"name": "Zoo Keeper", "provisioner": {"actions": {}}},
            {"name": "zoo-keeper", "dependson": ["Zoo Keeper"]},
            {"name": "HBase_Master", "dependencies": {"runtime": {"requires": ["Zoo Keeper"]}}},
        ],
        "partialtemplates": [{"name": "Base_Partial", "immutable": False, "defaults": {"services": ["Zoo Keeper"]}}],
        "clustertemplates": [
            {
                "name": "Parent",
                "defaults": {
                    "services": ["Zoo Keeper", "zoo-keeper", "HBase_Master"],
                    "provider": "Local",
                    "hardwaretype": "Large.8GB",
                    "imagetype": "CentOS 6",
                    "config": {"hb": "http://%host.service.HBase_Master%:60010", "zk2": "%num.service.zoo-keeper%"},
                },
                "compatibility": {"hardwaretypes": ["Large.8GB"], "imagetypes": ["CentOS 6"]},
                "constraints": {"services": {"Zoo Keeper": {"hardwaretypes": ["Large.8GB"], "quantities": {"max": "1"}}}},
            },
            {"name": "Child", "extends": {"name": "Parent"}, "includes": [{"name": "Base_Partial"}]},
        ],
    }
    out = tmp_path / "templates"
    report = import_export(doc, out)
    assert {"hardwaretype 'Large.8GB' -> 'large-8gb' (references renamed too)",
            "imagetype 'CentOS 6' -> 'centos-6' (references renamed too)",
            "service 'Zoo Keeper' -> 'zoo-keeper' (references renamed too)",
            "service 'zoo-keeper' -> 'zoo-keeper-2' (references renamed too)"} <= set(report.renamed)
    parent = read(out, "clustertemplates/parent.yaml")
    assert parent["defaults"]["services"] == ["zoo-keeper", "zoo-keeper-2", "hbase_master"]
    assert (parent["defaults"]["provider"], parent["defaults"]["hardwaretype"]) == ("local", "large-8gb")
    assert parent["constraints"]["services"] == {"zoo-keeper": {"hardwaretypes": ["large-8gb"], "quantities": {"max": 1}}}
    assert parent["defaults"]["config"] == {"hb": "http://%host.service.hbase_master%:60010", "zk2": "%num.service.zoo-keeper-2%"}
    assert read(out, "hardwaretypes/large-8gb.yaml")["providermap"] == {"local": {"flavor": "6"}}
    assert read(out, "services/zoo-keeper-2.yaml")["dependencies"]["runtime"]["requires"] == ["zoo-keeper"]
    child = read(out, "clustertemplates/child.yaml")
    assert (child["extends"], child["includes"]) == ("parent", ["base_partial"])
    assert report.todo == []
    catalog = load_catalog(out)
    assert catalog.problems == [] and sorted(catalog.clustertemplates) == ["child", "parent"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("hadoop-hdfs-namenode", "hadoop-hdfs-namenode"), ("HBase Master", "hbase-master"), ("aws.us-east-1", "aws-us-east-1"),
     ("1node", "x-1node"), ("--", "unnamed"), ("a" * 80, "a" * 63), ("Ünïcode!", "unicode")],
)
def test_sanitize_name(name: str, expected: str) -> None:
    assert sanitize_name(name) == expected


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = tmp_path / "templates"
    import_export(SAMPLE, out)
    before = (out / "services/base.yaml").read_text()
    (out / "services/base.yaml").write_text(before + "# edited\n")
    with pytest.raises(ImportConflict, match=r"would overwrite .*services/base.yaml.*--force"):
        import_export(SAMPLE, out)
    assert (out / "services/base.yaml").read_text().endswith("# edited\n")  # nothing was written
    import_export(SAMPLE, out, force=True)
    assert (out / "services/base.yaml").read_text() == before


def test_unknown_fields_are_reported_not_dropped_silently(tmp_path: Path) -> None:
    doc = {
        "services": [{"name": "svc", "owner": "ops", "dependencies": {"optional": ["x"]}, "provisioner": {"actions": {"Bootstrap": {}}}}],
        "automatortypes": [],
        "clustertemplates": [],
    }
    report = import_export(doc, tmp_path / "templates")
    assert "services/svc: field 'owner' is not supported: not imported" in report.dropped
    assert "services/svc: dependencies: field 'optional' is not supported: not imported" in report.dropped
    assert any("action 'Bootstrap' is not one of" in d for d in report.dropped)
    assert any("top-level 'automatortypes'" in d for d in report.dropped)


def test_macros_outside_our_dialect_are_reported(tmp_path: Path) -> None:
    template = {
        "name": "t",
        "defaults": {
            "services": [], "provider": "p", "hardwaretype": "h", "imagetype": "i",
            "config": {"a": "%ip.bind_v6.self% 100%% %cluster.id%", "c": "-Xmx75%", "b": "%join(map(ip.service.X,'$:1'),',')%"},
        },
    }
    report = import_export({"clustertemplates": [template]}, tmp_path / "templates")
    config = read(tmp_path / "templates", "clustertemplates/t.yaml")["defaults"]["config"]
    assert config["b"] == "%join(map(ip.service.x,'$:1'),',')%"
    assert config["c"] == "-Xmx75%%"  # a lone percent is literal
    assert [t.split(": macro ")[1] for t in report.todo] == [
        "%ip.bind_v6.self% uses ip.bind_v6.self, which Loom on Airflow does not expand: rewrite it",
        "%cluster.id% uses cluster.id, which Loom on Airflow does not expand: rewrite it",
    ]


def test_lease_milliseconds_become_durations(tmp_path: Path) -> None:
    template = {
        "name": "t",
        "defaults": {"services": [], "provider": "p", "hardwaretype": "h", "imagetype": "i"},
        "administration": {"leaseduration": {"initial": "5400000", "max": 0, "step": 1500}},
    }
    report = import_export({"clustertemplates": [template]}, tmp_path / "templates")
    lease = read(tmp_path / "templates", "clustertemplates/t.yaml")["administration"]["leaseduration"]
    assert lease == {"initial": "90m", "max": 0, "step": "2s"}
    assert any("1500 ms rounded up to 2 s" in c for c in report.converted)


def test_split_entities_detects_kinds() -> None:
    report = ImportReport()
    found = split_entities(
        [
            {"name": "a", "providermap": {"p": {"flavor": "f"}}},
            {"name": "b", "providermap": {"p": {"image": "i"}}},
            {"name": "c", "immutable": True},
            {"name": "d", "defaults": {}},
            {"name": "e", "providertype": "aws"},
            {"name": "f"},
        ],
        report,
    )
    assert {k: [e["name"] for e in v] for k, v in found.items() if v} == {
        "hardwaretypes": ["a"], "imagetypes": ["b"], "partialtemplates": ["c"], "clustertemplates": ["d"], "providers": ["e"]
    }
    assert any("'f'" in d for d in report.dropped)


def test_cli_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="loom")
    parser.add_argument("--templates")
    templates = parser.add_subparsers(dest="command").add_parser("templates").add_subparsers(dest="sub")
    add_import_command(templates)
    out = tmp_path / "templates"
    args = parser.parse_args(["templates", "import", str(SAMPLE), "--out", str(out)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "TO DO before use:" in printed and "Airflow Connection 'openstack'" in printed
    with pytest.raises(LoomError, match="--force"):
        args.func(args)
    args = parser.parse_args(["--templates", str(out), "templates", "import", str(SAMPLE), "--force"])
    assert args.func(args) == 0  # --out defaults to the templates folder
