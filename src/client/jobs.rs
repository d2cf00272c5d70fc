//! The job commands: submit, watch, list, cancel and download.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::api::{Api, Error, Result};
use super::watch::{self, JOB_FIELDS, Show};
use super::{EXIT_OK, JobCommand, ListArgs, SubmitArgs};

/// A submission's input, as typed.
#[derive(Clone, Debug)]
pub enum Input {
    File { name: String, path: PathBuf },
    Text { name: String, text: String },
}

/// `name=@path` (a file) or `name=text`.
pub fn parse_input(arg: &str) -> Result<Input, String> {
    let (name, value) = arg
        .split_once('=')
        .filter(|(name, _)| !name.is_empty())
        .ok_or_else(|| format!("`{arg}` is not NAME=@FILE or NAME=TEXT"))?;
    let name = name.to_owned();
    Ok(match value.strip_prefix('@') {
        Some("") => return Err(format!("`{arg}`: no file after @")),
        Some(path) => Input::File {
            name,
            path: PathBuf::from(path),
        },
        None => Input::Text {
            name,
            text: value.to_owned(),
        },
    })
}

/// `name=value`: the value as JSON when it is JSON, as text otherwise.
pub fn parse_setting(arg: &str) -> Result<(String, Value), String> {
    let (name, value) = arg
        .split_once('=')
        .filter(|(name, _)| !name.is_empty())
        .ok_or_else(|| format!("`{arg}` is not NAME=VALUE"))?;
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok((name.to_owned(), value))
}

pub async fn run(api: &Api, command: JobCommand, json: bool) -> Result<i32> {
    match command {
        JobCommand::Submit(args) => submit(api, args, json).await,
        JobCommand::Watch { id } => follow(api, &id, json).await,
        JobCommand::List(args) => list(api, args, json).await.map(|()| EXIT_OK),
        JobCommand::Cancel { id } => cancel(api, &id, json).await.map(|()| EXIT_OK),
        JobCommand::Download { id, output } => {
            download(api, &id, &output, json).await.map(|()| EXIT_OK)
        }
    }
}

async fn submit(api: &Api, args: SubmitArgs, json: bool) -> Result<i32> {
    let mut uploads = Vec::new();
    let inputs: Vec<Value> = args
        .inputs
        .into_iter()
        .map(|input| match input {
            Input::File { name, path } => {
                uploads.push(path);
                json!({ "name": name, "file": null })
            }
            Input::Text { name, text } => json!({ "name": name, "text": text }),
        })
        .collect();
    let settings: Map<String, Value> = args.settings.into_iter().collect();
    let variables = json!({ "input": {
        "workspaceId": args.workspace,
        "tool": args.tool,
        "name": args.name,
        "inputs": inputs,
        "settings": settings,
        "idempotencyKey": args.idempotency_key,
    }});
    let mutation = "mutation Submit($input: SubmitJobInput!) { submitJob(input: $input) { \
        replayed job { id status creditCost } } }";
    let data = if uploads.is_empty() {
        api.graphql(mutation, variables).await?
    } else {
        // Each file replaces the `null` of its input, by its position in `inputs`.
        let positions = variables["input"]["inputs"]
            .as_array()
            .map_or(Vec::new(), |all| {
                all.iter()
                    .enumerate()
                    .filter(|(_, input)| input.get("file").is_some())
                    .map(|(index, _)| format!("variables.input.inputs.{index}.file"))
                    .collect()
            });
        let files = positions.into_iter().zip(uploads).collect();
        api.graphql_with_files(mutation, variables, files).await?
    };
    let submitted = &data["submitJob"];
    let id = submitted["job"]["id"]
        .as_str()
        .ok_or_else(|| Error::Server {
            message: "the server returned no job".to_owned(),
            code: None,
        })?
        .to_owned();
    if json {
        let mut line = submitted["job"].clone();
        line["replayed"] = submitted["replayed"].clone();
        println!("{line}");
    } else {
        println!("{id}");
    }
    if args.wait {
        follow(api, &id, json).await
    } else {
        Ok(EXIT_OK)
    }
}

/// Follows a job to its end; its outcome is the exit code, and a failure's message is
/// printed to stderr.
async fn follow(api: &Api, id: &str, json: bool) -> Result<i32> {
    let job = watch::follow(api, id, Show::choose(json, id)).await?;
    let status = job["status"].as_str().unwrap_or_default();
    if let Some(message) = job["errorMessage"].as_str() {
        let code = job["errorCode"]
            .as_str()
            .map(|code| format!(" [{code}]"))
            .unwrap_or_default();
        eprintln!("{id} {status}: {message}{code}");
    }
    Ok(super::exit_code(status))
}

async fn cancel(api: &Api, id: &str, json: bool) -> Result<()> {
    let data = api
        .graphql(
            &format!(
                "mutation Cancel($id: ID!) {{ cancelJob(input: {{jobId: $id}}) {{ job {{ {JOB_FIELDS} }} }} }}"
            ),
            json!({ "id": id }),
        )
        .await?;
    let job = &data["cancelJob"]["job"];
    if json {
        println!("{job}");
    } else {
        println!(
            "{} {}",
            job["id"].as_str().unwrap_or(id),
            job["status"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

/// The columns of `job list`.
const LIST_FIELDS: &str = "id name toolName status stage progress creditCost createdAt";

async fn list(api: &Api, args: ListArgs, json: bool) -> Result<()> {
    let mut filter = Map::new();
    if !args.status.is_empty() {
        let statuses: Vec<&str> = args.status.iter().map(|status| status.as_str()).collect();
        filter.insert("statuses".to_owned(), json!(statuses));
    }
    if let Some(tool) = &args.tool {
        filter.insert("tool".to_owned(), json!(tool));
    }
    let filter = Value::Object(filter);
    let first = args.first as usize;
    let (workspaces, across) = match &args.workspace {
        Some(id) => (vec![(id.clone(), None)], false),
        None => (member_workspaces(api).await?, true),
    };
    let mut jobs = Vec::new();
    for (id, name) in &workspaces {
        for mut job in workspace_jobs(api, id, &filter, first).await? {
            job["workspace"] = match name {
                Some(name) => json!({ "id": id, "name": name }),
                None => json!({ "id": id }),
            };
            jobs.push(job);
        }
    }
    // Ids are time-ordered: newest first across workspaces, as within one.
    jobs.sort_by(|a, b| b["id"].as_str().cmp(&a["id"].as_str()));
    jobs.truncate(first);
    if json {
        for job in &jobs {
            println!("{job}");
        }
        return Ok(());
    }
    let mut header = vec!["ID", "STATUS", "TOOL", "PROGRESS", "CREDITS", "CREATED"];
    if across {
        header.push("WORKSPACE");
    }
    header.push("NAME");
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|job| {
            let text = |field: &str| job[field].as_str().unwrap_or_default().to_owned();
            let progress = job["progress"].as_f64().unwrap_or_default();
            let mut row = vec![
                text("id"),
                text("status"),
                text("toolName"),
                format!("{:.0}%", (progress * 100.0).floor()),
                job["creditCost"].to_string(),
                created(job["createdAt"].as_str().unwrap_or_default()),
            ];
            if across {
                row.push(
                    job["workspace"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
            row.push(text("name"));
            row
        })
        .collect();
    print_table(&header, &rows);
    Ok(())
}

/// The workspaces the caller is a member of: id and name.
async fn member_workspaces(api: &Api) -> Result<Vec<(String, Option<String>)>> {
    let mut found = Vec::new();
    let mut after = Value::Null;
    loop {
        let data = api
            .graphql(
                "query Workspaces($after: String) { viewer { workspaces(first: 100, after: $after) { \
                 pageInfo { hasNextPage endCursor } nodes { id name } } } }",
                json!({ "after": after }),
            )
            .await?;
        let page = &data["viewer"]["workspaces"];
        for workspace in page["nodes"].as_array().into_iter().flatten() {
            found.push((
                workspace["id"].as_str().unwrap_or_default().to_owned(),
                workspace["name"].as_str().map(str::to_owned),
            ));
        }
        if page["pageInfo"]["hasNextPage"] != json!(true) {
            return Ok(found);
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
}

/// A workspace's newest `first` jobs that pass `filter`, a page of at most 100 at a time.
async fn workspace_jobs(
    api: &Api,
    workspace: &str,
    filter: &Value,
    first: usize,
) -> Result<Vec<Value>> {
    let query = format!(
        "query Jobs($ws: ID!, $filter: JobFilterInput, $first: Int, $after: String) {{ \
         workspace(id: $ws) {{ jobs(filter: $filter, first: $first, after: $after) {{ \
         pageInfo {{ hasNextPage endCursor }} nodes {{ {LIST_FIELDS} }} }} }} }}"
    );
    let mut jobs = Vec::new();
    let mut after = Value::Null;
    while jobs.len() < first {
        let page_size = (first - jobs.len()).min(100);
        let data = api
            .graphql(
                &query,
                json!({ "ws": workspace, "filter": filter, "first": page_size, "after": after }),
            )
            .await?;
        let page = &data["workspace"]["jobs"];
        jobs.extend(page["nodes"].as_array().into_iter().flatten().cloned());
        if page["pageInfo"]["hasNextPage"] != json!(true) {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    Ok(jobs)
}

/// A time as `2026-12-04 16:39:04` (UTC).
fn created(at: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(at)
        .map(|at| at.to_utc().format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| at.to_owned())
}

/// Columns padded to their widest cell; the last one is not padded.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|title| title.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut line = String::new();
        for (index, cell) in cells.into_iter().enumerate() {
            if index == last {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[index]));
            }
        }
        println!("{}", line.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

async fn download(api: &Api, id: &str, output: &Path, json: bool) -> Result<()> {
    let data = api
        .graphql(
            "query Outputs($id: ID!) { job(id: $id) { id status \
             files(role: OUTPUT) { name size sha256 downloadUrl } } }",
            json!({ "id": id }),
        )
        .await?;
    let job = &data["job"];
    let status = job["status"].as_str().unwrap_or_default();
    let files = job["files"].as_array().cloned().unwrap_or_default();
    if files.is_empty() {
        // Only a completed run keeps its outputs.
        return if status == "COMPLETED" {
            eprintln!("{id} has no output files");
            Ok(())
        } else {
            Err(Error::Server {
                message: format!("{id} is {status}: only a completed job has outputs"),
                code: None,
            })
        };
    }
    tokio::fs::create_dir_all(output)
        .await
        .map_err(|source| Error::Io {
            path: output.to_owned(),
            source,
        })?;
    for file in &files {
        // The name as the server gives it, reduced to a plain file name inside `output`.
        let name = crate::files::clean_name(file["name"].as_str().unwrap_or_default());
        let path = output.join(&name);
        let url = file["downloadUrl"].as_str().unwrap_or_default();
        let sha256 = api.download(url, &path).await?;
        if Some(sha256.as_str()) != file["sha256"].as_str() {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(Error::Unexpected {
                url: url.to_owned(),
                what: format!("{name} arrived with another SHA-256 than the server's"),
            });
        }
        if json {
            println!(
                "{}",
                json!({ "name": name, "path": path, "size": file["size"], "sha256": sha256 })
            );
        } else {
            println!("{}", path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_json_when_they_parse_and_text_otherwise() {
        for (arg, value) in [
            ("k=3", json!(3)),
            ("on=true", json!(true)),
            ("list=[1,2]", json!([1, 2])),
            ("quoted=\"x\"", json!("x")),
            ("word=hello", json!("hello")),
            ("empty=", json!("")),
            ("eq=a=b", json!("a=b")),
        ] {
            let (name, parsed) = parse_setting(arg).unwrap();
            assert_eq!(parsed, value, "{arg}");
            assert_eq!(name, arg.split('=').next().unwrap());
        }
        assert!(parse_setting("=3").is_err());
        assert!(parse_setting("k").is_err());
    }

    #[test]
    fn inputs_are_files_after_an_at_sign_and_text_otherwise() {
        assert!(matches!(
            parse_input("sequences=@reads.fa").unwrap(),
            Input::File { name, path } if name == "sequences" && path == Path::new("reads.fa")
        ));
        assert!(matches!(
            parse_input("note=hello @ you").unwrap(),
            Input::Text { name, text } if name == "note" && text == "hello @ you"
        ));
        assert!(parse_input("sequences=@").is_err());
        assert!(parse_input("reads.fa").is_err());
    }
}
