"""What mariabackup logs about a replica's position, parsed (lines as MariaDB 10.11 writes them)."""

from drorch.sources.mariadb_facts import parse_vertical, replica_position

GTID_LOG = """\
[00] 2026-11-23 02:52:44 MySQL binlog position: filename 'binlog.000001', position '1148', GTID of the last change '0-1-5'
[00] 2026-11-23 02:52:44 MySQL slave binlog position: gtid_slave_pos '0-1-5,1-2-7'; master '' master_use_gtid = slave_pos
[00] 2026-11-23 02:52:44 completed OK!
"""
FILE_LOG = "[00] 2026-11-23 02:52:44 MySQL slave binlog position: master '' filename 'mysql-bin.000042' position '1234'\n"


def test_gtid_replication_records_gtid_slave_pos():
    facts = replica_position(GTID_LOG)
    assert facts["primary_gtid"] == "0-1-5,1-2-7"
    assert "primary_binlog_file" not in facts and facts["replica_position"].startswith("gtid_slave_pos")


def test_file_position_replication_records_the_primarys_binlog_coordinates():
    facts = replica_position(FILE_LOG)
    assert (facts["primary_binlog_file"], facts["primary_binlog_position"]) == ("mysql-bin.000042", 1234)
    assert "primary_gtid" not in facts


def test_no_slave_line_records_nothing():
    assert replica_position("[00] completed OK!\n") == {}


def test_vertical_output_first_row_with_empty_values():
    text = ("*************************** 1. row ***************************\n"
            "                Slave_IO_State: Waiting for master to send event\n"
            "                   Master_Host: 127.0.0.1\n"
            "                    Last_Error:\n"
            "*************************** 2. row ***************************\n"
            "                   Master_Host: 10.0.0.9\n")
    assert parse_vertical(text) == {"Slave_IO_State": "Waiting for master to send event",
                                    "Master_Host": "127.0.0.1", "Last_Error": ""}
