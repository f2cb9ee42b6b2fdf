; Inno Setup 6 script: per-user installer for hitl-desktop (no administrator rights needed).
;
; Build on Windows after `python packaging\build.py` has made the PyInstaller folder (build.py runs this itself
; when iscc.exe is on PATH):
;   iscc /DAppVersion=0.1.0 /DSourceDir=packaging\dist\hitl-desktop-0.1.0-windows-x64 /Opackaging\dist packaging\windows\hitl-desktop.iss
; AppVersion must be the [project] version from pyproject.toml (build.py passes it).
; Reference: https://jrsoftware.org/ishelp/ (PrivilegesRequired, {autopf}, ChangesEnvironment, [Icons]).

#ifndef AppVersion
  #error Pass the version: iscc /DAppVersion=X.Y.Z ...
#endif
#ifndef SourceDir
  #define SourceDir "..\dist\hitl-desktop-" + AppVersion + "-windows-x64"
#endif
#define AppName "HITL Desktop"
#define AppExe "hitl-desktop.exe"

[Setup]
; Keep AppId constant across releases: it is how upgrades and the uninstaller find the installation.
AppId={{6C1E2F4A-7B3D-4E59-9A1C-0D8F5B2E6A73}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher=hitl-desktop
; Per-user install: {autopf} resolves to %LOCALAPPDATA%\Programs, shortcuts go to the user's Start menu.
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
DefaultDirName={autopf}\{#AppName}
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputBaseFilename=hitl-desktop-{#AppVersion}-setup
#ifdef IconFile
; build.py converts resources\icons\hitl-desktop-256.png to an .ico (Pillow) and passes /DIconFile=...
SetupIconFile={#IconFile}
#endif
UninstallDisplayIcon={app}\{#AppExe}
UninstallDisplayName={#AppName} {#AppVersion}
Compression=lzma2
SolidCompression=yes
WizardStyle=modern
; For the optional "add hitl to PATH" task (HKCU\Environment).
ChangesEnvironment=yes
CloseApplications=yes

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked
Name: "addtopath"; Description: "Add the hitl command to my PATH"; GroupDescription: "Command line:"

[Files]
; The whole PyInstaller folder: hitl-desktop.exe (window), hitl.exe (console), _internal\ (shared libraries).
Source: "{#SourceDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{autoprograms}\{#AppName}"; Filename: "{app}\{#AppExe}"; WorkingDir: "{userdocs}"
Name: "{autoprograms}\{#AppName} (demo project)"; Filename: "{app}\{#AppExe}"; Parameters: "--demo"; WorkingDir: "{userdocs}"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\{#AppExe}"; WorkingDir: "{userdocs}"; Tasks: desktopicon

[Registry]
Root: HKCU; Subkey: "Environment"; ValueType: expandsz; ValueName: "Path"; ValueData: "{olddata};{app}"; \
    Tasks: addtopath; Check: NeedsAddPath(ExpandConstant('{app}'))

[Run]
Filename: "{app}\{#AppExe}"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent

[Code]
function NeedsAddPath(Dir: string): Boolean;
var
  Path: string;
begin
  if not RegQueryStringValue(HKCU, 'Environment', 'Path', Path) then
    Path := '';
  Result := Pos(';' + Uppercase(Dir) + ';', ';' + Uppercase(Path) + ';') = 0;
end;

procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
var
  Path, Dir: string;
  P: Integer;
begin
  { Remove what the addtopath task added; user data (projects, settings) is never touched. }
  if CurUninstallStep = usPostUninstall then
  begin
    Dir := ExpandConstant('{app}');
    if RegQueryStringValue(HKCU, 'Environment', 'Path', Path) then
    begin
      P := Pos(';' + Uppercase(Dir), Uppercase(Path));
      if P > 0 then
      begin
        Delete(Path, P, Length(Dir) + 1);
        RegWriteExpandStringValue(HKCU, 'Environment', 'Path', Path);
      end;
    end;
  end;
end;
