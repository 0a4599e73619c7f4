import { IsEmail, IsInt, IsString, Length, Min } from 'class-validator';

/** The `user` keyword argument of `tasks.registerUser`, checked by a ValidationPipe before the task runs. */
export class NewUserDto {
  @IsEmail()
  email!: string;

  @IsString()
  @Length(1, 64)
  name!: string;

  @IsInt()
  @Min(13)
  age!: number;
}
