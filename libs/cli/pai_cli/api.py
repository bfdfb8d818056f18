"""The routes both clients expose as methods (see ``endpoint``); composites live in each client."""

from __future__ import annotations

from pai_cli import routes as r
from pai_cli.endpoint import Endpoint


class Api:
    # meta and sign-in
    info = Endpoint(r.info)
    authn_info = Endpoint(r.authn_info)
    oidc_config = Endpoint(r.oidc_config)
    # tokens
    list_tokens = Endpoint(r.list_tokens)
    create_application_token = Endpoint(r.create_application_token)
    revoke_token = Endpoint(r.revoke_token)
    check_token = Endpoint(r.check_token)
    # users
    list_users = Endpoint(r.list_users)
    get_user = Endpoint(r.get_user)
    me = Endpoint(r.me)
    update_me = Endpoint(r.update_me)
    create_user = Endpoint(r.create_user)
    update_user = Endpoint(r.update_user)
    delete_user = Endpoint(r.delete_user)
    set_user_extension = Endpoint(r.set_user_extension)
    set_user_grouplist = Endpoint(r.set_user_grouplist)
    add_user_to_group = Endpoint(r.add_user_to_group)
    remove_user_from_group = Endpoint(r.remove_user_from_group)
    set_user_virtual_clusters = Endpoint(r.set_user_virtual_clusters)
    set_user_password = Endpoint(r.set_user_password)
    set_user_email = Endpoint(r.set_user_email)
    set_user_admin = Endpoint(r.set_user_admin)
    # groups and the audit log
    list_groups = Endpoint(r.list_groups)
    get_group = Endpoint(r.get_group)
    group_members = Endpoint(r.group_members)
    create_group = Endpoint(r.create_group)
    update_group = Endpoint(r.update_group)
    delete_group = Endpoint(r.delete_group)
    set_group_extension = Endpoint(r.set_group_extension)
    set_group_extension_attribute = Endpoint(r.set_group_extension_attribute)
    set_group_description = Endpoint(r.set_group_description)
    set_group_external_name = Endpoint(r.set_group_external_name)
    audit_log = Endpoint(r.audit_log)
    # dead letters
    dead_letters = Endpoint(r.dead_letters)
    dead_letter = Endpoint(r.dead_letter)
    replay_dead_letter = Endpoint(r.replay_dead_letter)
    # jobs
    list_jobs = Endpoint(r.list_jobs)
    list_jobs_page = Endpoint(r.list_jobs_page)
    get_job = Endpoint(r.get_job)
    get_job_attempt_detail = Endpoint(r.get_job_attempt_detail)
    job_config = Endpoint(r.job_config)
    set_execution_type = Endpoint(r.set_execution_type)
    stop_job = Endpoint(r.stop_job)
    add_tag = Endpoint(r.add_tag)
    remove_tag = Endpoint(r.remove_tag)
    job_events = Endpoint(r.job_events)
    job_attempts = Endpoint(r.job_attempts)
    job_attempt = Endpoint(r.job_attempt)
    job_attempts_healthz = Endpoint(r.job_attempts_healthz)
    task_attempts = Endpoint(r.task_attempts)
    task_log_locations = Endpoint(r.task_log_locations)
    task_attempt_log = Endpoint(r.task_attempt_log)
    # marketplace
    list_templates = Endpoint(r.list_templates)
    get_template = Endpoint(r.get_template)
    create_template = Endpoint(r.create_template)
    update_template = Endpoint(r.update_template)
    delete_template = Endpoint(r.delete_template)
    star_template = Endpoint(r.star_template)
    use_template = Endpoint(r.use_template)
    # cluster
    virtual_clusters = Endpoint(r.virtual_clusters)
    virtual_cluster = Endpoint(r.virtual_cluster)
    sku_types = Endpoint(r.sku_types)
    storages = Endpoint(r.storages)
    storage = Endpoint(r.storage)
    create_storage = Endpoint(r.create_storage)
    replace_storage = Endpoint(r.replace_storage)
    delete_storage = Endpoint(r.delete_storage)
    nodes = Endpoint(r.nodes)
    pods = Endpoint(r.pods)
    exit_spec = Endpoint(r.exit_spec)
    put_exit_spec = Endpoint(r.put_exit_spec)
    reset_exit_spec = Endpoint(r.reset_exit_spec)
